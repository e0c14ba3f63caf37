"""The one way a file's bytes are hashed here (base image files, outputs, what Glance got)."""
import hashlib

CHUNK = 1 << 20


def file_digest(path, algo="sha256"):
    """Hex digest of the file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()

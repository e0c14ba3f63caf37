"""The safety check nova and Glance make of a disk image before they use it, with the same
code (oslo.utils' format inspector): the content is the format the image claims, and it
names no other file that qemu would read into it (a qcow2's backing file or external data
file, a VMDK's extents). A build makes one before it attaches, converts or mounts an image
it did not make itself: a qcow2 whose backing file is /etc/shadow, converted or mounted
through qemu, would put that file of this machine into the image.

Only raw and qcow2 images are used; a raw disk that holds a GPT is raw."""
import os

from oslo_utils.imageutils import format_inspector

from .errors import InvalidArgument

FORMATS = ("raw", "qcow2")
# what the inspector calls a raw disk whose content it recognises
RAW_CONTENT = ("raw", "gpt")
# what a file's name claims
CLAIMED_BY_SUFFIX = {".raw": "raw", ".qcow2": "qcow2"}


class UnsafeImage(InvalidArgument):
    """The image is not what it claims to be, or it names another file to read."""


def claimed_by_name(path):
    """The format a file's name claims (by its suffix), or None (.img, say, is either)."""
    return CLAIMED_BY_SUFFIX.get(os.path.splitext(path)[1].lower())


def check(path, claimed=None, what="image"):
    """The format of the image at ``path`` (raw or qcow2), once the format inspector found
    it safe: its content is ``claimed`` if given (a Glance image's disk_format, what a file's
    name claims), and it names no backing file, data file or other file to read. Raises
    UnsafeImage naming the file, what is wrong and what is allowed; reads only the image's
    headers."""
    if claimed is not None and claimed not in FORMATS:
        raise UnsafeImage(f"{what} {path}: format {claimed!r} cannot be used (allowed: {', '.join(FORMATS)})")
    try:
        inspector = format_inspector.detect_file_format(path)
    except format_inspector.ImageFormatError as e:
        raise UnsafeImage(f"{what} {path}: its content is not one disk image format ({e}) "
                          f"(allowed: {', '.join(FORMATS)})") from None
    except OSError as e:
        raise UnsafeImage(f"{what} {path} cannot be read: {e.strerror}") from None
    found = "raw" if str(inspector) in RAW_CONTENT else str(inspector)
    if found not in FORMATS:
        raise UnsafeImage(f"{what} {path} is a {inspector} image (allowed: {', '.join(FORMATS)})")
    if claimed and found != claimed:
        raise UnsafeImage(f"{what} {path} claims to be {claimed} but its content is {found} "
                          f"(allowed: content in the format the image claims)")
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as e:
        reasons = "; ".join(f"{name}: {failure}" for name, failure in sorted(e.failures.items()))
        raise UnsafeImage(f"{what} {path} ({found}) failed the format safety check: {reasons} (allowed: "
                          f"{found} images that name no backing file, data file or other file)") from None
    except format_inspector.ImageFormatError as e:
        raise UnsafeImage(f"{what} {path} ({found}) cannot be checked: {e}") from None
    return found

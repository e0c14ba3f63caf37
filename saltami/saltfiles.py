"""What a build needs of Salt's file server and of state results, wherever the build runs:
on the master (the orchestration), on a masterless minion (``salt-call --local ami.bake``) or
on a builder minion of the master (the orchestration's volume bake). Salt's file client is
what serves SLS files in each of these places.

What a build's SLS used of the file server (its "render files", which the fingerprint
hashes) is learnt from the build itself: the files the state run's file client fetched
(each lands in its cache, ``<cachedir>/files/<saltenv>/``), the ``salt://`` sources its
states name (a ``file.managed`` whose target already matches fetches nothing, and a
``source`` list names the candidates it may fall back to), and the custom module
directories a minion syncs. The next build hashes the same list again with the files'
current content: any change in one of them makes the image out of date, and a change
elsewhere does not."""
import hashlib
import os

import salt.fileclient
import salt.utils.url
import salt.version

# the custom module types a minion syncs (saltutil.sync_all), each from _<type>/ in the file
# server: an SLS may call any of them once synced
SYNCED = ("beacons", "clouds", "engines", "executors", "grains", "log_handlers", "matchers", "modules",
          "output", "pillar", "proxy", "renderers", "returners", "sdb", "serializers", "states",
          "thorium", "tops", "utils", "wrapper")
CUSTOM_DIRS = tuple(f"_{form}" for form in SYNCED)


def _failure(key, state):
    """A failed state's id and comment, and for a command (cmd.run, cmd.script, whose comment
    is only "Command ... run") the last line it wrote to stderr, which says why."""
    changes = state.get("changes")
    err = (changes.get("stderr") or "").strip().splitlines() if isinstance(changes, dict) else []
    return f"{state.get('__id__', key)}: {state.get('comment')}" + (f" ({err[-1][-300:]})" if err else "")


def states_outcome(ret, what, error, test=False):
    """{"states", "changed"} of a state run's return; any failed state (or a rendering error,
    which comes back as a list of strings) raises ``error`` listing each failure."""
    if not isinstance(ret, dict):
        raise error(f"{what}: {ret}")
    failed = [_failure(k, v) for k, v in ret.items() if v.get("result") is False]
    if failed:
        raise error(f"{what}: {len(failed)} of {len(ret)} states failed: " + "; ".join(failed))
    changed = sorted(v.get("__id__", k) for k, v in ret.items()
                     if v.get("changes") or (test and v.get("result") is None))
    return {"states": len(ret), "changed": changed}


class SaltFiles:
    def __init__(self, opts, saltenv="base"):
        self.opts = opts
        self.saltenv = saltenv

    def _fileclient(self):
        if self.opts.get("__role") == "master":
            return salt.fileclient.FSClient(self.opts)
        return salt.fileclient.get_file_client(self.opts)

    def _files(self):
        return self._fileclient().file_list(self.saltenv)

    def sls_exists(self, name):
        path = name.replace(".", "/")
        files = set(self._files())
        return f"{path}.sls" in files or f"{path}/init.sls" in files

    def files(self):
        """{path in the tree: local copy} of the whole tree."""
        client = self._fileclient()
        return {rel: client.cache_file(f"salt://{rel}", self.saltenv) for rel in sorted(self._files())}

    def render_files(self, entries):
        """{path in the tree: its content's hash, or None where nothing is} for ``entries``
        (see ``render_entries``): an entry that is a file, every file below an entry that is
        a directory, and None for an entry that is neither (a source candidate not there,
        which may appear later). A custom module directory the tree lacks gives nothing."""
        client = self._fileclient()
        listing = None
        found = {}
        for entry in sorted(set(entries)):
            digest = client.hash_file(f"salt://{entry}", self.saltenv)
            if digest:
                found[entry] = f"{digest['hash_type']}:{digest['hsum']}"
                continue
            if listing is None:
                listing = self._files()
            below = [rel for rel in listing if rel.startswith(f"{entry}/")]
            for rel in below:
                digest = client.hash_file(f"salt://{rel}", self.saltenv)
                found[rel] = digest and f"{digest['hash_type']}:{digest['hsum']}" or None
            if not below and entry not in CUSTOM_DIRS:
                found[entry] = None
        return found

    @staticmethod
    def salt_version():
        return salt.version.__version__


def first_entries(names):
    """What a flavour's first build (no earlier build says what its SLS use) hashes: every
    file of each SLS's top directory, the top-level SLS files, the custom module directories."""
    tops = sorted({name.split(".")[0] for name in names})
    return sorted({*tops, *(f"{top}.sls" for top in tops), *CUSTOM_DIRS})


def cached(files_dir):
    """Paths in the tree of the files a file client cached below ``files_dir`` (its
    ``<cachedir>/files/<saltenv>``)."""
    return sorted(os.path.relpath(os.path.join(d, n), files_dir).replace(os.sep, "/")
                  for d, _dirs, names in os.walk(files_dir) for n in names)


def cached_on_minion(listing, saltenv="base"):
    """The same from ``cp.list_minion``, which names every file of the minion's cache by its
    path on the minion."""
    marker = f"/files/{saltenv}/"
    return sorted(path.split(marker, 1)[1] for path in listing or () if marker in path)


def referenced(low, saltenv="base"):
    """Paths in the tree of the ``salt://`` URLs of ``saltenv`` that low chunks (what
    ``state.show_low_sls`` gives) name anywhere in their arguments."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, str) and value.startswith("salt://"):
            path, env = salt.utils.url.parse(value)
            if path and (env or saltenv) == saltenv:
                found.add(os.path.normpath(path).strip("/"))

    walk(low if isinstance(low, list) else [])
    return found


def render_entries(fetched, low=(), saltenv="base"):
    """What a build's SLS used of the file server, to hash now and at the next build: the
    files its state run fetched, the sources its states name, the custom module directories
    (whose files the fetched list may hold: the directories stand for them)."""
    custom = tuple(f"{d}/" for d in CUSTOM_DIRS)
    used = {path for path in {*fetched, *referenced(low, saltenv)} if not path.startswith(custom)}
    return sorted(used | set(CUSTOM_DIRS))


def files_hash(files):
    """sha256 over ``render_files``'s {path: hash}."""
    h = hashlib.sha256()
    for rel, digest in sorted(files.items()):
        h.update(rel.encode() + b"\0" + (digest or "-").encode() + b"\n")
    return h.hexdigest()


def changed_files(before, now):
    """What differs between two ``render_files`` results, as "salt://PATH changed" (added,
    removed: a file that is there in one only)."""
    said = []
    for rel in sorted(set(before) | set(now)):
        old, new = before.get(rel), now.get(rel)
        if old == new:
            continue
        how = "added" if old is None else "removed" if new is None else "changed"
        said.append(f"salt://{rel} {how}")
    return said

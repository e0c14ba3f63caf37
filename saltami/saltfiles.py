"""What a build needs of Salt's file server and of state results, wherever the build runs:
on the master (the orchestration), on a masterless minion (``salt-call --local ami.bake``) or
on a builder minion of the master (the orchestration's volume bake). Salt's file client is
what serves SLS files in each of these places."""
import hashlib

import salt.fileclient
import salt.version


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

    def files(self, names=None):
        """{path in the tree: local copy} of the whole tree, or of what the SLS ``names`` can
        bring in: every file of each SLS's top-level directory (its templates and files too)
        and top-level SLS files."""
        tops = {n.split(".")[0] for n in names or ()}
        client = self._fileclient()
        return {rel: client.cache_file(f"salt://{rel}", self.saltenv) for rel in sorted(self._files())
                if names is None or rel.split("/")[0] in tops or rel in {f"{t}.sls" for t in tops}}

    def sls_hash(self, names):
        """sha256 over the files the SLS can bring in, with their paths."""
        h = hashlib.sha256()
        for rel, path in self.files(names).items():
            with open(path, "rb") as f:
                h.update(rel.encode() + b"\0" + hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    @staticmethod
    def salt_version():
        return salt.version.__version__

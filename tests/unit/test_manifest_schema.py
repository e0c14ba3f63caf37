"""The build manifest's keys are those its schema lists (saltami/pipeline/manifest.py, SCHEMA):
the keys builds write, run over fake steps as in test_pipeline.py, and every key, step
record key and resource kind that the code reads or writes, found by reading the code (its
syntax tree) of saltami/ and the loader modules. A key the schema lacks is a key to add to
it (what it holds, who writes it); a key that no code uses any more is one to drop."""
import ast
import os
import subprocess
from pathlib import Path

import pytest

from saltami import build_pillar, pipeline
from saltami.pipeline import claims
from saltami.pipeline.manifest import SCHEMA

REPO = Path(__file__).resolve().parents[2]
# the code that reads and writes manifests: the library and the loader modules
SOURCES = ("saltami", "_modules", "_runners", "_states", "_pillar")
# names whose values the scan knows: a manifest key or resource kind written with one
# (build.data[role], build.add(f"{role}_server", ...)) is one for each of them
KNOWN = {"role": build_pillar.ROLES}
# the names the code gives a Build, whose add, made and forget name resource kinds
BUILDS = {"build", "b"}
# where the code reads a manifest as plain JSON rather than through Build: (file, function)
# and the name the manifest has there
PLAIN_READERS = {
    ("saltami/build_pillar.py", "build_of"): "data",
    ("saltami/build_pillar.py", "served"): "data",
    ("saltami/build_pillar.py", "flavour_pillar"): "build_data",
    ("saltami/images.py", "_render_files"): "data",
    ("saltami/pipeline/resolve.py", "previous_render"): "data",
}


# ------------------------------------------------------------------------------ the builds
def check_keys(data):
    """The keys of a manifest's data, its step records and cleanup that SCHEMA does not list."""
    unlisted = [key for key in data if key not in SCHEMA]
    unlisted += [f"steps[].{key}" for record in data.get("steps", []) for key in record
                 if key not in SCHEMA["steps"].keys]
    unlisted += [f"cleanup.{key}" for key in data.get("cleanup", {}) if key not in SCHEMA["cleanup"].keys]
    return unlisted


def fake_step(name, fails=None):
    step = type(pipeline)(f"fake_steps.{name}")
    step.NAME = name

    def run(build, ctx):
        # as resolve does: the flavour's claim, released when the build ends
        if name == "resolve":
            claims.acquire(build, ctx, timeout=0)
        if fails:
            raise fails

    step.run, step.undo = run, lambda build, ctx: None
    return step


@pytest.mark.parametrize("fails", [None, RuntimeError("no valid host")])
def test_a_build_writes_only_the_keys_of_the_schema(ctx, fails):
    steps = [fake_step("resolve"), fake_step("boot", fails=fails)]
    build = pipeline.Build.create(ctx.builds_dir, "f", steps)
    assert check_keys(build.data) == []
    try:
        pipeline.run_all(build, ctx, steps)
    except pipeline.StepFailed:
        assert fails
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert saved["status"] == ("cleaned" if fails else "done")
    assert check_keys(saved) == []


def test_a_reaped_build_has_only_the_keys_of_the_schema(ctx):
    """An abandoned build (the process of its running step is gone), cleaned up by another."""
    build = pipeline.Build.create(ctx.builds_dir, "f", pipeline.steps_for("snapshot"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    build.data["steps"].append({"name": "resolve", "status": "running",
                                "process": {**claims.this_process(), "pid": gone.pid}})
    build.save()
    assert [r["build"] for r in claims.reap(ctx.builds_dir, lambda name: ctx)] == [build.id]
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert "reaper" in saved and saved["status"] == "cleaned"
    assert check_keys(saved) == []


# ------------------------------------------------------------------------------ the code
def python_files():
    """The modules of SOURCES (their relative path, their syntax tree), links not followed:
    saltami/_modules is _modules."""
    for top in SOURCES:
        for folder, _dirs, files in os.walk(REPO / top):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = Path(folder, name)
                    yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def walk(scope):
    """The nodes of ``scope`` (a module or a function), those of the functions it defines left
    out: each is a scope of its own, with its own names."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend(ast.iter_child_nodes(node))


def strings(node):
    """The strings a key expression can be, or None when the scan cannot tell."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in KNOWN:
        return list(KNOWN[node.id])
    if isinstance(node, ast.JoinedStr):
        found = [""]
        for part in node.values:
            values = strings(part.value if isinstance(part, ast.FormattedValue) else part)
            if values is None:
                return None
            found = [f"{start}{value}" for start in found for value in values]
        return found
    return None


def dicts(node):
    """The dict displays an expression gives (``{...} if x else {}``)."""
    if isinstance(node, ast.Dict):
        return [node]
    if isinstance(node, ast.IfExp):
        return dicts(node.body) + dicts(node.orelse)
    return []


def keys_used(nodes, is_mapping):
    """(key, line) of each key that ``nodes`` read or write in a mapping (an expression for
    which ``is_mapping`` holds): m[KEY], m.get(KEY), m.setdefault(KEY), m.pop(KEY),
    m.update(KEY=..., **{KEY: ...}), KEY in m. A key the scan cannot tell is None."""
    for node in nodes:
        if isinstance(node, ast.Subscript) and is_mapping(node.value):
            keys = [node.slice]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and is_mapping(node.func.value) and node.func.attr in ("get", "setdefault", "pop", "update")):
            if node.func.attr != "update":
                keys = node.args[:1]
            else:
                yield from ((kw.arg, node.lineno) for kw in node.keywords if kw.arg)
                given = node.args + [kw.value for kw in node.keywords if kw.arg is None]
                keys = [key for arg in given for d in dicts(arg) for key in d.keys]
        elif (isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn))
              and is_mapping(node.comparators[0])):
            keys = [node.left]
        else:
            continue
        for key in keys:
            for value in strings(key) or [None]:
                yield value, node.lineno


class Scope:
    """What a function (or a module, outside its functions: ``walk``) calls a manifest's data
    and its step records."""

    def __init__(self, node, plain=None):
        self.nodes = list(walk(node))
        self.assignments = [n for n in self.nodes if isinstance(n, ast.Assign)]
        # d = build.data; a manifest read as plain JSON
        self.data = {plain} - {None}
        for a in self.assignments:
            if self.is_data(a.value):
                self.data.update(t.id for t in a.targets if isinstance(t, ast.Name))
        # for s in d["steps"]; record = next(s for s in reversed(build.data["steps"]) ...);
        # step = (other.data["steps"] or [{}])[-1]; build.data["steps"].append(record)
        self.records = set()
        for node in self.nodes:
            if isinstance(node, (ast.For, ast.comprehension)) and self.is_steps(node.iter):
                self.records.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
                    and self.is_steps(node.func.value)):
                self.records.update(a.id for a in node.args if isinstance(a, ast.Name))
        for a in self.assignments:
            # one record of the steps: next(...) of them, or one of them by its index
            one = ((isinstance(a.value, ast.Call) and getattr(a.value.func, "id", None) == "next")
                   or (isinstance(a.value, ast.Subscript) and not strings(a.value.slice)))
            if one and any(self.is_steps(n) for n in ast.walk(a.value)):
                self.records.update(t.id for t in a.targets if isinstance(t, ast.Name))

    def is_data(self, node):
        """build.data (any NAME.data), or a name this scope gives a manifest's data."""
        return ((isinstance(node, ast.Attribute) and node.attr == "data" and isinstance(node.value, ast.Name))
                or (isinstance(node, ast.Name) and node.id in self.data))

    def is_steps(self, node):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "reversed":
            node = node.args[0]
        return isinstance(node, ast.Subscript) and self.is_data(node.value) and strings(node.slice) == ["steps"]

    def is_record(self, node):
        return isinstance(node, ast.Name) and node.id in self.records

    def keys(self):
        return keys_used(self.nodes, self.is_data)

    def record_keys(self):
        yield from ((key, line) for key, line in keys_used(self.nodes, self.is_record) if key)
        # record = {"name": ..., "status": ...}
        for a in self.assignments:
            if any(self.is_record(t) for t in a.targets):
                yield from ((strings(k)[0], a.lineno) for d in dicts(a.value) for k in d.keys if strings(k))

    def resource_kinds(self):
        def is_resources(node):
            return isinstance(node, ast.Subscript) and self.is_data(node.value) and strings(node.slice) == ["resources"]

        yield from ((kind, line) for kind, line in keys_used(self.nodes, is_resources) if kind)
        for node in self.nodes:
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("add", "made", "forget")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in BUILDS and node.args):
                yield from ((kind, node.lineno) for kind in strings(node.args[0]) or ())


def scopes():
    """Each module's scopes: the module (for build.data anywhere in it) and its functions."""
    for path, tree in python_files():
        yield path, Scope(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, Scope(node, PLAIN_READERS.get((path, node.name)))


@pytest.fixture(scope="module")
def used():
    """{what: {key: [where]}} of the top-level keys, the step record keys and the resource kinds
    the code uses; None keys are those the scan cannot tell."""
    found = {"keys": {}, "steps": {}, "resources": {}}
    for path, scope in scopes():
        for what, pairs in (("keys", scope.keys()), ("steps", scope.record_keys()),
                            ("resources", scope.resource_kinds())):
            for key, line in pairs:
                found[what].setdefault(key, set()).add(f"{path}:{line}")
    return found


def unlisted(found, listed):
    return {key: sorted(where) for key, where in sorted(found.items(), key=str) if key not in listed}


def test_the_plain_json_readers_are_where_the_scan_looks():
    functions = {(path, node.name) for path, tree in python_files() for node in ast.walk(tree)
                 if isinstance(node, ast.FunctionDef)}
    assert sorted(set(PLAIN_READERS) - functions) == [], "a function of PLAIN_READERS moved: update it"


def test_every_key_the_code_uses_is_in_the_schema(used):
    assert unlisted(used["keys"], SCHEMA) == {}, (
        "add these keys to SCHEMA in saltami/pipeline/manifest.py (None: a key the scan cannot "
        "read, write it as a string, or add the name to KNOWN here)")


def test_every_step_record_key_and_resource_kind_the_code_uses_is_in_the_schema(used):
    assert unlisted(used["steps"], SCHEMA["steps"].keys) == {}, 'add them to SCHEMA["steps"].keys'
    assert unlisted(used["resources"], SCHEMA["resources"].keys) == {}, 'add them to SCHEMA["resources"].keys'


def test_the_schema_lists_no_key_that_no_code_uses(used, tmp_path):
    # a new build's keys are written at once, by Build.create
    new = pipeline.Build.create(tmp_path, "f", []).data
    assert sorted(set(SCHEMA) - set(used["keys"]) - set(new)) == []
    assert sorted(set(SCHEMA["steps"].keys) - set(used["steps"])) == []
    assert sorted(set(SCHEMA["resources"].keys) - set(used["resources"])) == []


def test_the_scan_finds_what_it_looks_for(used):
    """The scan's own check, on uses it must find, one of each form."""
    assert {"orchestrator", "plan", "failed_step", "waited_for", "extends", "validator", "render"} <= set(used["keys"])
    assert {"process", "seconds", "services"} <= set(used["steps"])
    assert {"validator_key", "snapshot_volume"} <= set(used["resources"])


def test_every_key_has_a_type_a_writer_and_a_meaning():
    for key, entry in SCHEMA.items():
        assert entry.type and entry.by and entry.meaning, key
        assert all(isinstance(text, str) and text for text in entry.keys.values()), key

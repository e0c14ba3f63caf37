"""The fingerprint is over what the SLS really used: after one build (``salt-run ami.build``
on the real master) of a flavour whose SLS includes another formula's SLS, imports a
map.jinja and its defaults.yaml from elsewhere and installs a salt:// file, a change to any
of those, or to a custom module, makes ``salt-run ami.status`` and ``ami.present
test=True`` say the image is out of date, naming the file; an unrelated change (another
formula, a file of the same formula that no state uses) does not. ``salt-run ami.status``
of a flavour never built, and of one whose pillar changed, too.

The files are temporary files of the master's state tree, named for this run; the
fingerprints are the build's own (the master computes them), never recomputed here."""
import contextlib
import json

import pytest

from helpers import RUN
from saltami import provenance
from test_states import present

P = f"fp{RUN[-8:]}"
FLAVOUR = f"amitest-fp-{RUN[-8:]}"
FILES = {
    f"{P}main/init.sls": f"""
{{% from "{P}lib/map.jinja" import settings with context %}}
include:
  - {P}other

/etc/ami-test/{P}-conf:
  file.managed:
    - source: salt://{P}main/files/conf
    - makedirs: True

/etc/ami-test/{P}-greeting:
  file.managed:
    - contents: {{{{ settings.greeting | yaml_encode }}}}
    - makedirs: True
""",
    f"{P}main/files/conf": "conf, first version\n",
    f"{P}lib/map.jinja": f"""
{{% import_yaml "{P}lib/defaults.yaml" as defaults %}}
{{% set settings = salt['pillar.get']('{P}', defaults, merge=True) %}}
""",
    f"{P}lib/defaults.yaml": "greeting: hello\n",
    f"{P}other/init.sls": f"""
/etc/ami-test/{P}-other:
  file.managed:
    - contents: other, first version
    - makedirs: True
""",
    f"_modules/{P}mod.py": 'def hello():\n    return "first version"\n',
}
# (what a user changes, the file, what is appended to it)
CHANGES = {
    "an included SLS of another formula": (f"{P}other/init.sls", "# changed\n"),
    "a map.jinja imported from another formula": (f"{P}lib/map.jinja", "{# changed #}\n"),
    "a defaults.yaml that map.jinja imports": (f"{P}lib/defaults.yaml", "farewell: bye\n"),
    "a salt:// file a state installs": (f"{P}main/files/conf", "second version\n"),
    "a custom module": (f"_modules/{P}mod.py", "# changed\n"),
}


def clear_file_list_cache(salt_run):
    # the master lists the file server's files for 20 s (fileserver_list_cache_time)
    assert salt_run.run("fileserver.clear_file_list_cache").returncode == 0


@pytest.fixture(scope="module")
def definition():
    """The flavour: amitest (its base, builder, pillar and publishing) with this test's SLS."""
    # no second boot to check the image: these builds are about what makes one (test_build.py validates)
    return {"extends": "amitest", "sls": [f"{P}main"], "validate": False}


@pytest.fixture(scope="module")
def tree(salt_master, salt_run):
    """The SLS and the files they use, in the master's state tree for this module."""
    root = salt_master.state_tree.base.write_path
    with contextlib.ExitStack() as stack:
        for rel, content in FILES.items():
            stack.enter_context(salt_master.state_tree.base.temp_file(rel, content))
        clear_file_list_cache(salt_run)
        yield root


@pytest.fixture(scope="module")
def built(tree, salt_run, module_clients, definition):
    ret = salt_run.run("ami.build", flavour=FLAVOUR, definition=definition)
    try:
        assert ret.returncode == 0, ret.stdout + ret.stderr
        image = provenance.find_promoted(module_clients, FLAVOUR)[0]
        yield {"summary": ret.data, "image": image, "manifest": json.loads(open(ret.data["manifest"]).read())}
    finally:
        provenance.prune(module_clients, FLAVOUR, keep=0, force=True)


def status(salt_run, definition, flavour=FLAVOUR):
    ret = salt_run.run("ami.status", flavour, definition=definition)
    assert ret.returncode == 0, ret.stdout + ret.stderr
    return ret.data


@contextlib.contextmanager
def appended(path, text):
    """``text`` at the end of the file for the block, then the file as it was."""
    before = path.read_text()
    path.write_text(before + text)
    try:
        yield
    finally:
        path.write_text(before)


def test_the_build_recorded_the_files_its_sls_used(built):
    render = built["manifest"]["render"]
    for rel in FILES:
        assert rel in render["files"], rel
    assert "amitest/init.sls" in render["files"]
    # formulas that its SLS do not use are not
    assert not [rel for rel in render["files"] if rel.startswith(("amitestbroken/", "postgres/", "ami/"))]
    assert built["manifest"]["fingerprint"] == built["image"]["ami_fingerprint"]


def test_status_right_after_the_build_is_up_to_date(built, salt_run, definition):
    out = status(salt_run, definition)
    assert out["up_to_date"] is True and out["why"] == []
    assert out["image"] == {"id": built["image"]["id"], "name": built["image"]["name"]}
    assert out["fingerprint"] == built["image"]["ami_fingerprint"]


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_what_the_sls_used_makes_the_image_out_of_date(change, built, tree, salt_master, salt_run,
                                                                    definition):
    rel, text = CHANGES[change]
    with appended(tree / rel, text):
        out = status(salt_run, definition)
        assert out["up_to_date"] is False
        assert out["why"] == [f"salt://{rel} changed"]
        assert out["newest"]["id"] == built["image"]["id"]
        _ret, state = present(salt_master, salt_run, FLAVOUR, definition, test=True)
        assert state["result"] is None
        assert state["comment"] == f"flavour {FLAVOUR} would be built: salt://{rel} changed"
    assert status(salt_run, definition)["up_to_date"] is True


def test_a_new_custom_module_makes_the_image_out_of_date(built, salt_master, salt_run, definition):
    rel = f"_grains/{P}new.py"
    with salt_master.state_tree.base.temp_file(rel, "def new():\n    return {}\n"):
        clear_file_list_cache(salt_run)
        out = status(salt_run, definition)
    clear_file_list_cache(salt_run)
    assert out["up_to_date"] is False and out["why"] == [f"salt://{rel} added"]


def test_an_unrelated_change_does_not(built, salt_master, salt_run, definition):
    unrelated = {
        # another formula
        f"{P}unrelated/init.sls": "nothing:\n  test.nop: []\n",
        # a file of the same formula that no state uses
        f"{P}main/files/unused": "used by nothing\n",
    }
    with contextlib.ExitStack() as stack:
        for rel, content in unrelated.items():
            stack.enter_context(salt_master.state_tree.base.temp_file(rel, content))
        clear_file_list_cache(salt_run)
        out = status(salt_run, definition)
        _ret, state = present(salt_master, salt_run, FLAVOUR, definition, test=True)
    clear_file_list_cache(salt_run)
    assert out["up_to_date"] is True, out["why"]
    assert state["result"] is True and state["changes"] == {}


def test_status_names_a_changed_pillar(built, salt_run, definition):
    changed = {**definition, "pillar": {"amitest": {"mark": "another mark"}}}
    out = status(salt_run, changed)
    assert out["up_to_date"] is False and out["why"] == ["pillar_hash changed"]
    assert out["newest"]["id"] == built["image"]["id"]


def test_status_of_a_flavour_never_built(tree, salt_run, definition):
    never = f"{FLAVOUR}-never"
    out = status(salt_run, definition, flavour=never)
    assert out["up_to_date"] is False and out["image"] is None and out["newest"] is None
    assert out["why"] == [f"no image of flavour {never} exists"]

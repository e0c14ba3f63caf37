"""The loader modules are found both ways, from one copy: the salt.loader entry point of the
installed package, and saltutil.sync_* from file_roots (salt/formulas/_modules)."""
import os
from importlib.metadata import entry_points

from helpers import REPO
from saltami import saltext

MODULES = {"modules": ["ami.py", "ami_nova.py", "ami_cinder.py", "ami_glance.py"], "states": ["ami.py"],
           "runners": ["ami.py"], "pillar": ["ami.py"]}


def test_entry_point_points_at_the_one_copy():
    (ep,) = [e for e in entry_points(group="salt.loader") if e.value == "saltami.saltext:loader_dirs"]
    dirs = ep.load()()
    assert dirs == saltext.loader_dirs()
    for kind, files in MODULES.items():
        (d,) = dirs[kind]
        for f in files:
            assert os.path.samefile(os.path.join(d, f), REPO / f"_{kind}" / f)
            assert os.path.samefile(os.path.join(d, f), REPO / "salt" / "formulas" / f"_{kind}" / f)


def test_sync_from_file_roots_delivers_the_modules(salt_call):
    ret = salt_call.run("saltutil.sync_modules", "saltenv=base")
    assert ret.returncode == 0, ret
    # a second sync has nothing new to copy; either way each module is in the minion's extmods
    ret = salt_call.run("sys.list_modules")
    assert {"ami", "ami_nova", "ami_cinder", "ami_glance"} <= set(ret.data)
    extmods = salt_call.run("config.get", "extension_modules").data
    for f in MODULES["modules"]:
        assert os.path.exists(os.path.join(extmods, "modules", f))

"""The fingerprint of a chroot bake (``salt-call --local ami.bake``, the local provider, no
master, no cloud) is over what the SLS used in the chroot, too: the bake records the files
the chroot's salt fetched; after an unrelated change the next bake has nothing to do, after
a change to a file the SLS imported it bakes again. The formula is test_fingerprint's, in a
file_roots of this module's."""
import json
import os
from pathlib import Path

import pytest
import yaml

from helpers import RUN, local_minion, mounted_image, salt_call_local
from saltami import vanilla
from test_fingerprint import FILES, P

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")
FLAVOUR = f"fplocal-{RUN[-8:]}"


@pytest.fixture(scope="module")
def minion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp-local-minion")
    tree = root / "srv"
    for rel, content in FILES.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(content)
    flavours = {FLAVOUR: {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": [f"{P}main"],
                          "outputs": ["raw"], "output_dir": str(root / "images"), "timeouts": {"apply": 600},
                          "validate": False}}
    made = local_minion(root, flavours)
    config = yaml.safe_load((root / "minion").read_text())
    config["file_roots"]["base"].insert(0, str(tree))
    # files added during the module show at once
    config["fileserver_list_cache_time"] = 0
    (root / "minion").write_text(yaml.safe_dump(config))
    vanilla.ensure()
    return {**made, "tree": tree, "images": root / "images"}


def bake(minion):
    return salt_call_local(minion["config_dir"], "ami.bake", f"flavour={FLAVOUR}")


@pytest.fixture(scope="module")
def baked(minion):
    result = bake(minion)
    assert result["status"] == "done" and not result["nothing_to_do"], result
    return result


def manifest_of(minion, build_id):
    return json.loads(Path(minion["cachedir"], "ami", "builds", f"{build_id}.json").read_text())


def test_the_bake_recorded_what_the_chroot_used(baked, minion):
    render = manifest_of(minion, baked["build"])["render"]
    for rel in FILES:
        assert rel in render["files"], rel
    assert not [rel for rel in render["files"] if rel.startswith(("amitest/", "postgres/"))]


def test_after_an_unrelated_change_the_next_bake_has_nothing_to_do(baked, minion):
    (minion["tree"] / f"{P}main" / "files" / "unused").write_text("used by nothing\n")
    (minion["tree"] / f"{P}unrelated").mkdir()
    (minion["tree"] / f"{P}unrelated" / "init.sls").write_text("nothing:\n  test.nop: []\n")
    result = bake(minion)
    assert result["nothing_to_do"] == (f"{baked['image']['directory']} already holds the outputs of fingerprint "
                                       f"{baked['fingerprint']}")
    assert [d.name for d in minion["images"].iterdir()] == [baked["build"]]


def test_after_a_change_to_an_imported_file_it_bakes_again(baked, minion, tmp_path):
    defaults = minion["tree"] / f"{P}lib" / "defaults.yaml"
    defaults.write_text("greeting: changed\n")
    result = bake(minion)
    assert result["status"] == "done" and not result["nothing_to_do"], result
    assert result["fingerprint"] != baked["fingerprint"]
    assert sorted(d.name for d in minion["images"].iterdir()) == sorted([baked["build"], result["build"]])
    with mounted_image(result["image"]["files"]["raw"]["image"], tmp_path) as root:
        assert (root / "etc" / "ami-test" / f"{P}-greeting").read_text().strip() == "changed"

"""The ami ext_pillar (_pillar/ami.py, saltami/build_pillar.py): a running build's builder minion
gets its flavour's pillar from the master, every other minion nothing; a build whose flavour
has a pillar the master cannot serve fails at resolve, naming the fix."""
import copy
import secrets

import pytest

from helpers import RUN, cloud_inventory
from saltami import build_pillar, builds, flavour, pipeline
from saltami.errors import InvalidArgument
from saltami.pipeline.context import Context
from saltami.saltmaster import Master

# a flavour no other test builds (bench/build_times.py builds it, on its own master)
FLAVOUR = "amitest-p3"


@pytest.fixture(scope="module")
def master_opts(salt_master):
    return copy.deepcopy(dict(salt_master.config))


def running_build(builds_dir, minion_id):
    """The manifest of a running build whose builder's key is ``minion_id``, as boot leaves it;
    a short id (the minion's socket paths hold it)."""
    build = pipeline.Build.create(builds_dir, FLAVOUR, [], build_id=f"{FLAVOUR}-{secrets.token_hex(3)}")
    build.add("builder_key", minion_id)
    return build


def marks(call):
    """The flavour's mark and ami:build in a minion's pillar. Not the secret: what a minion
    returns goes through the master's log and bus (test_build.py looks for it there)."""
    return [call.run("pillar.get", key).data for key in ("amitest:mark", "ami:build")]


def test_only_the_builder_of_a_running_build_gets_the_flavours_pillar(salt_master, salt_call, salt_key,
                                                                      builds_dir):
    build = running_build(builds_dir, "to be named")
    minion_id = f"ami-builder-{build.id}"
    build.data["resources"]["builder_key"] = [minion_id]
    build.save()
    builder = salt_master.salt_minion_daemon(minion_id)
    try:
        with builder.started():
            builder_call = builder.salt_call_cli(timeout=120)
            assert marks(builder_call) == ["p3", build.id]
            # any other minion: nothing from the ext_pillar, while the build runs
            assert marks(salt_call) == ["", ""]
            # a finished build's minion gets nothing either
            build.data["status"] = "done"
            build.save()
            assert marks(builder_call) == ["", ""]
    finally:
        build.path.unlink()
        salt_key.run("--delete", minion_id, "--yes")


def test_served_only_to_the_minions_a_running_build_names(master_opts, tmp_path):
    opts = {**master_opts, "cachedir": str(tmp_path)}
    build = running_build(builds.builds_dir(opts), "placeholder")
    validator = f"ami-validator-{build.id}"
    build.data["resources"]["validator_key"] = [validator]
    build.save()
    served = build_pillar.served(opts, validator)
    assert served["amitest"]["mark"] == "p3" and served["ami"] == {"build": build.id}
    for stranger in (f"ami-builder-{build.id}", f"ami-validator-../{build.id}", f"ami-validator-{build.id}x",
                     "minion"):
        assert build_pillar.served(opts, stranger) == {}, stranger
    build.data["status"] = "failed"
    build.save()
    assert build_pillar.served(opts, validator) == {}


def context(opts, name, builds_dir, definition=None):
    ami = builds.master_pillar(opts)["ami"]
    if definition is not None:
        ami = {**ami, "flavours": {**ami["flavours"], name: definition}}
    return Context(None, Master(opts), flavour.resolve(ami, name), str(builds_dir))


def test_a_master_without_the_ext_pillar_refuses_a_flavour_with_pillar(master_opts, tmp_path):
    opts = {**master_opts, "ext_pillar": []}
    build = pipeline.Build.create(tmp_path, "amitest", [])
    with pytest.raises(InvalidArgument) as e:
        build_pillar.prepare(build, context(opts, "amitest", tmp_path))
    assert "has a pillar" in str(e.value) and build_pillar.MASTER_CONFIG in str(e.value)
    # a flavour without pillar needs no ext_pillar
    build_pillar.prepare(build, context(opts, "bare", tmp_path, {"extends": "amitest", "pillar": None}))


def test_inline_flavour_with_its_own_pillar_fails_at_resolve(salt_run, module_clients, salt_key):
    name = f"amitest-inline-{RUN[-8:]}"
    before = cloud_inventory(module_clients, salt_key, match=name)
    ret = salt_run.run("ami.build", flavour=name,
                       definition={"extends": "amitest", "pillar": {"amitest": {"mark": "inline"}}})
    assert ret.returncode != 0
    out = ret.stdout + ret.stderr
    assert "step resolve failed" in out and "cannot have a pillar of its own" in out
    assert cloud_inventory(module_clients, salt_key, match=name) == before

"""The ami states (_states/ami.py) over a stubbed ``saltutil.runner``: the one ``ret`` each
builds from what the ami runner answers (up to date, would build, built, failed), ``test=True``
and real ``changes``; loaded with pytest-salt-factories' loader mocks, as Salt extensions'
unit tests do. What the runner itself does is tested through a real master
(tests/integration/test_build.py)."""
import importlib.util
from pathlib import Path

import pytest

from saltami import provenance

REPO = Path(__file__).resolve().parents[2]
FP = "f" * 64
NEWEST = {"id": "0b1e-old", "name": "debian-postgres-20261120-101500", "fingerprint": "e" * 64}


def _load():
    spec = importlib.util.spec_from_file_location("saltami_tests_ami_state", REPO / "_states" / "ami.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ami_state = _load()


class Runner:
    """``saltutil.runner`` answering each ``ami.<fun>`` with a canned reply, recording calls."""

    def __init__(self, **replies):
        self.replies = replies
        self.calls = []

    def __call__(self, name, **kwargs):
        fun = name.removeprefix("ami.")
        self.calls.append((fun, kwargs))
        return self.replies[fun]

    def called(self):
        return [fun for fun, _ in self.calls]


def outdated(why=("sls_hash changed",)):
    return {"flavour": "debian-postgres", "fingerprint": FP, "up_to_date": False, "image": None,
            "newest": NEWEST, "why": list(why)}


def summary(**changes):
    """What ami.build answers for a build that succeeded (builds.summary): error None."""
    return {"build": "debian-postgres-20261121-101500-a1b2c3", "flavour": "debian-postgres", "status": "done",
            "fingerprint": FP, "nothing_to_do": None, "error": None,
            "image": {"id": "9c3a-new", "name": "debian-postgres-20261121-101500"},
            "manifest": "/var/cache/salt/master/ami/builds/debian-postgres-20261121-101500-a1b2c3.json",
            "steps": [{"name": "resolve", "status": "done", "seconds": 1.2}], **changes}


@pytest.fixture
def runner():
    return Runner()


@pytest.fixture
def test_mode():
    return False


@pytest.fixture
def configure_loader_modules(runner, test_mode):
    return {ami_state: {"__salt__": {"saltutil.runner": runner}, "__opts__": {"test": test_mode}}}


def test_virtual_name():
    assert ami_state.__virtual__() == "ami"


# ------------------------------------------------------------------------------ present
def test_present_up_to_date_builds_nothing(runner):
    runner.replies["status"] = {"flavour": "debian-postgres", "fingerprint": FP, "up_to_date": True,
                                "image": {"id": "9c3a", "name": "debian-postgres-20261121"}, "newest": None,
                                "why": []}
    ret = ami_state.present("debian-postgres")
    assert ret == {"name": "debian-postgres", "result": True, "changes": {},
                   "comment": f"image debian-postgres-20261121 (9c3a) has fingerprint {FP}: nothing to build"}
    assert runner.calls == [("status", {"flavour": "debian-postgres", "definition": None})]


@pytest.mark.parametrize("test_mode", [True])
def test_present_with_test_says_what_would_be_built_and_why(runner, test_mode):
    runner.replies["status"] = outdated(["base_hash changed", "sls_hash changed"])
    ret = ami_state.present("debian-postgres")
    assert ret["result"] is None
    assert ret["comment"] == "flavour debian-postgres would be built: base_hash changed; sls_hash changed"
    assert ret["changes"] == {"image": {"old": NEWEST, "new": f"fingerprint {FP}"}}
    assert runner.called() == ["status"]


def test_present_builds_and_reports_the_new_image(runner):
    # a successful build's summary carries error: None, which is no failure
    runner.replies.update(status=outdated(), build=summary())
    ret = ami_state.present("debian-postgres")
    assert ret["result"] is True, ret["comment"]
    assert ret["comment"] == "built image debian-postgres-20261121-101500 because sls_hash changed"
    assert ret["changes"] == {
        "image": {"old": NEWEST, "new": {"id": "9c3a-new", "name": "debian-postgres-20261121-101500"}},
        "build": {"id": "debian-postgres-20261121-101500-a1b2c3",
                  "manifest": "/var/cache/salt/master/ami/builds/debian-postgres-20261121-101500-a1b2c3.json"}}
    assert runner.called() == ["status", "build"]


def test_present_passes_inline_keys_without_salt_s_own(runner):
    runner.replies.update(status=outdated(), build=summary())
    keys = {"base": "debian-12", "sls": ["postgres"], "flavor": "m1.small"}
    ami_state.present("debian-postgres", **keys, __id__="debian-postgres", __env__="base", __sls__="images")
    assert runner.calls == [("status", {"flavour": "debian-postgres", "definition": keys}),
                            ("build", {"flavour": "debian-postgres", "definition": keys})]


@pytest.mark.parametrize("reply, comment", [
    # the ami runner's own failure (_runners/ami.py _reported)
    ({"Error": "build b1: step boot failed: nova: boot: No valid host", "retcode": 1},
     "build b1: step boot failed: nova: boot: No valid host"),
    ({"error": "flavour 'debian-postgres': key 'sls': required, and not set"},
     "flavour 'debian-postgres': key 'sls': required, and not set"),
    # what saltutil.runner gives back for a runner that raised
    ("Exception occurred in runner ami.build: CommandExecutionError: no cloud",
     "Exception occurred in runner ami.build: CommandExecutionError: no cloud"),
])
def test_present_fails_with_the_build_s_error_and_no_changes(runner, reply, comment):
    runner.replies.update(status=outdated(), build=reply)
    ret = ami_state.present("debian-postgres")
    assert ret == {"name": "debian-postgres", "result": False, "changes": {}, "comment": comment}


def test_present_fails_when_the_status_fails_and_builds_nothing(runner):
    runner.replies["status"] = "Exception occurred in runner ami.status: no flavour 'debian-postgres'"
    ret = ami_state.present("debian-postgres")
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == "Exception occurred in runner ami.status: no flavour 'debian-postgres'"
    assert runner.called() == ["status"]


# ------------------------------------------------------------------------------ absent, pruned
def removed(deleted, kept_in_use=None, keep=0, **more):
    """The ami.remove runner's answer: saltami.provenance.prune's report."""
    return {**provenance.pruning_report(keep), "deleted": deleted, "kept_in_use": kept_in_use or {}, **more}


def test_absent_deletes_every_image(runner):
    runner.replies["remove"] = removed(["i1", "i2"])
    ret = ami_state.absent("debian-postgres")
    assert ret == {"name": "debian-postgres", "result": True, "changes": {"deleted": ["i1", "i2"]},
                   "comment": "deleted 2 image(s) of debian-postgres"}
    assert runner.calls == [("remove", {"flavour": "debian-postgres", "keep": 0, "force": False, "test": False})]


def test_absent_with_nothing_left_has_no_changes(runner):
    runner.replies["remove"] = removed([])
    ret = ami_state.absent("debian-postgres")
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"] == "deleted 0 image(s) of debian-postgres"


def test_absent_fails_while_a_server_uses_an_image(runner):
    runner.replies["remove"] = removed(["i1"], {"i2": ["server-1"]})
    ret = ami_state.absent("debian-postgres")
    assert ret["result"] is False and ret["changes"] == {"deleted": ["i1"]}
    assert ret["comment"] == ("deleted 1 image(s) of debian-postgres; kept 1 in use by servers: "
                              "{'i2': ['server-1']}")


def test_absent_force_is_passed_on(runner):
    runner.replies["remove"] = removed(["i1", "i2"])
    assert ami_state.absent("debian-postgres", force=True)["result"] is True
    assert runner.calls[0][1]["force"] is True


@pytest.mark.parametrize("test_mode", [True])
def test_absent_with_test_says_what_would_go(runner, test_mode):
    runner.replies["remove"] = removed(["i1"])
    ret = ami_state.absent("debian-postgres")
    assert ret["result"] is None and ret["changes"] == {"deleted": ["i1"]}
    assert ret["comment"] == "would delete 1 image(s) of debian-postgres"
    assert runner.calls[0][1]["test"] is True


def test_pruned_keeps_the_newest_and_the_used_ones(runner):
    runner.replies["remove"] = removed(["i4"], {"i5": ["server-1"]}, keep=2)
    ret = ami_state.pruned("debian-postgres", keep=2)
    # an image in use is no failure of pruned: it is kept and said
    assert ret["result"] is True and ret["changes"] == {"deleted": ["i4"]}
    assert ret["comment"] == "deleted 1 image(s) of debian-postgres; kept 1 in use by servers: {'i5': ['server-1']}"
    assert runner.calls == [("remove", {"flavour": "debian-postgres", "keep": 2, "force": False, "test": False})]


@pytest.mark.parametrize("state", ["absent", "pruned"])
def test_removal_failure_is_the_state_s_failure(runner, state):
    runner.replies["remove"] = {"Error": "glance: 503 Service Unavailable", "retcode": 1}
    ret = getattr(ami_state, state)("debian-postgres")
    assert ret == {"name": "debian-postgres", "result": False, "changes": {},
                   "comment": "glance: 503 Service Unavailable"}


def test_pruned_says_what_it_hid_and_what_it_could_not_remove(runner):
    runner.replies["remove"] = removed(["i4"], keep=1, hidden=["i5"], failed={"i6": "409 InUseByStore"})
    ret = ami_state.pruned("debian-postgres", keep=1)
    # an image left behind fails the state, and what did go is its changes
    assert ret["result"] is False and ret["changes"] == {"deleted": ["i4"], "hidden": ["i5"]}
    assert ret["comment"] == ("deleted 1 image(s) of debian-postgres; hid 1 shared image(s); "
                              "could not remove 1: {'i6': '409 InUseByStore'}")


def test_present_reports_what_the_build_s_prune_did_and_nothing_else(runner):
    runner.replies.update(status=outdated(), build=dict(summary(), pruned=removed(["i1"], keep=2)))
    ret = ami_state.present("debian-postgres")
    assert ret["result"] is True and ret["changes"]["pruned"] == {"deleted": ["i1"]}


# ------------------------------------------------------------------------------ the orchestration's steps
@pytest.fixture
def steps(monkeypatch):
    """builds.master_step (what ami.step runs) answering each step with a canned result."""
    from saltami import builds
    from saltami.pipeline import StepFailed

    done, calls, planned = {}, [], {}

    def master_step(opts, context, flavour, build, step, owner=None, cloud=None):
        calls.append(step)
        if isinstance(done.get(step), Exception):
            raise done[step]
        return {"step": step, "seconds": 2.5, **done.get(step, {})}

    def master_dry_run(opts, context, flavour, cloud=None):
        if isinstance(planned.get("plan"), Exception):
            raise planned["plan"]
        return planned["plan"]

    monkeypatch.setattr(builds, "master_step", master_step)
    monkeypatch.setattr(builds, "master_dry_run", master_dry_run)
    return {"results": done, "calls": calls, "failed": StepFailed, "planned": planned}


def test_a_step_that_did_something_says_what(steps):
    steps["results"]["snapshot"] = {"image": "9c3a-new", "size": 1073741824}
    ret = ami_state.step("snapshot", flavour="debian-postgres", build="b1")
    assert ret == {"name": "snapshot", "result": True, "comment": "build b1: step snapshot done in 2.5s",
                   "changes": {"image": "9c3a-new", "size": 1073741824}}


def test_a_resolve_with_nothing_to_do_has_no_changes(steps):
    # the other steps need resolve's changes (build.sls): with none they do not run
    steps["results"]["resolve"] = {"fingerprint": FP, "nothing_to_do": f"image x already has fingerprint {FP}"}
    ret = ami_state.step("resolve", flavour="debian-postgres", build="b1")
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"] == f"build b1: nothing to do: image x already has fingerprint {FP}"


def test_a_failed_step_fails_its_state_with_the_reason(steps):
    steps["results"]["provision"] = steps["failed"]("build b1: step provision failed: nginx: pkg failed")
    ret = ami_state.step("provision", flavour="debian-postgres", build="b1")
    assert ret == {"name": "provision", "result": False, "changes": {},
                   "comment": "build b1: step provision failed: nginx: pkg failed"}


@pytest.mark.parametrize("test_mode", [True])
def test_with_test_true_no_step_runs_and_resolve_says_why_and_what_it_would_make(steps, test_mode):
    create = {"servers": [{"role": "builder", "name": "ami-builder-b1"}], "volumes": [], "images": []}
    steps["planned"]["plan"] = {"would_build": True, "why": ["sls_hash changed"], "fingerprint": FP,
                                "would_create": create, "would_prune": {"deleted": ["i1"]}}
    ret = ami_state.step("resolve", flavour="debian-postgres", build="b1")
    assert ret["result"] is None and ret["comment"] == "flavour debian-postgres would be built: sls_hash changed"
    assert ret["changes"] == {"would_create": create, "would_prune": {"deleted": ["i1"]}, "fingerprint": FP}
    assert ami_state.step("boot", flavour="debian-postgres", build="b1")["result"] is None
    assert steps["calls"] == []


@pytest.mark.parametrize("test_mode", [True])
def test_a_dry_run_of_a_bad_flavour_fails_as_the_build_would(steps, test_mode):
    from saltami.errors import InvalidArgument

    steps["planned"]["plan"] = InvalidArgument("flavour 'debian-postgres': key 'flavr': unknown key")
    ret = ami_state.step("resolve", flavour="debian-postgres", build="b1")
    assert ret == {"name": "resolve", "result": False, "changes": {},
                   "comment": "flavour 'debian-postgres': key 'flavr': unknown key"}

"""Pruning by the build itself, as a user sees it through ``ami.present`` in an
orchestration: a flavour with ``keep: 1`` built three times (a property changed each time).
The second build finds the first image in use by a server: kept, and the state says so;
the third, once the server is gone, deletes both older images."""
import pytest

from helpers import RUN, booted
from saltami import provenance
from saltami.cloud import glance
from saltami.errors import NotFound
from test_states import present

FLAVOUR = f"amitest-pr-{RUN[-8:]}"


def definition(mark):
    # a property makes another image (an inline flavour has no pillar of its own)
    # no second boot to check the image: these builds are about pruning (test_build.py validates)
    return {"extends": "amitest", "keep": 1, "validate": False, "properties": {"test_mark": f"{mark}-{RUN}"}}


def build(salt_master, salt_run, mark):
    ret, state = present(salt_master, salt_run, FLAVOUR, definition(mark))
    assert ret.returncode == 0 and state["result"] is True, state["comment"]
    return state


@pytest.fixture(scope="module")
def history(salt_master, salt_run, module_clients):
    """The three builds' states, and the server that used the first image."""
    try:
        first = build(salt_master, salt_run, "first")
        image = first["changes"]["image"]["new"]["id"]
        with booted(module_clients, image, f"{FLAVOUR}-user") as server:
            second = build(salt_master, salt_run, "second")
            after_second = [i["id"] for i in provenance.find_promoted(module_clients, FLAVOUR)]
        third = build(salt_master, salt_run, "third")
        yield {"states": [first, second, third], "server": server.id, "after_second": after_second,
               "images": [s["changes"]["image"]["new"]["id"] for s in (first, second, third)]}
    finally:
        provenance.prune(module_clients, FLAVOUR, keep=0, force=True)


def test_an_image_a_server_uses_is_kept_and_reported(history):
    first, second, _ = history["images"]
    state = history["states"][1]
    # what the prune did, and nothing it did not
    assert state["changes"]["pruned"] == {"kept_in_use": {first: [history["server"]]}}
    assert f"kept 1 older image(s) in use by servers: {{'{first}': ['{history['server']}']}}" in state["comment"]
    # beyond keep, and still there
    assert history["after_second"] == [second, first]


def test_a_build_beyond_keep_deletes_the_oldest_promoted_images(history, module_clients):
    first, second, third = history["images"]
    # the first build had nothing to prune
    assert "pruned" not in history["states"][0]["changes"]
    state = history["states"][2]
    assert state["changes"]["pruned"] == {"deleted": [second, first]}
    assert [i["id"] for i in provenance.find_promoted(module_clients, FLAVOUR)] == [third]
    for gone in (first, second):
        with pytest.raises(NotFound):
            glance.show(module_clients, gone)

"""Waiting for a server's deletion, over a stand-in of novaclient's server manager: a server
that lands in ERROR while its deletion runs is deleted again, and a second delete that finds it
already gone (nova finished the first one in between) is no failure. Seen in the fault tests:
the undo of a boot cut short by a timeout failed with "delete ... again: could not be found"."""
import pytest
from novaclient import exceptions as nova_exc

from saltami.cloud import nova
from saltami.errors import ResourceFailed


class Server:
    def __init__(self, manager, status="ERROR"):
        self.manager, self.status, self.fault = manager, status, {"message": "build aborted"}
        setattr(self, "OS-EXT-STS:task_state", None)

    def delete(self):
        self.manager.deletes += 1
        if self.manager.delete_finds_none:
            raise nova_exc.NotFound(404, "Instance could not be found.")


class Servers:
    """``get`` answers from ``states`` in turn (None: gone), then 404 for ever."""

    def __init__(self, states, delete_finds_none):
        self.states, self.deletes, self.delete_finds_none = list(states), 0, delete_finds_none

    def get(self, server_id):
        if not self.states or self.states[0] is None:
            raise nova_exc.NotFound(404, f"Instance {server_id} could not be found.")
        return Server(self, self.states.pop(0))


class Clients:
    def __init__(self, servers):
        self.nova = type("Nova", (), {"servers": servers})()


@pytest.mark.parametrize("delete_finds_none", [False, True], ids=["deleted-again", "already-gone"])
def test_a_server_in_error_while_deleted_is_deleted_again_and_a_404_then_means_gone(delete_finds_none):
    servers = Servers(["ERROR", None], delete_finds_none)
    nova.wait_deleted(Clients(servers), "s1", timeout=5)
    assert servers.deletes == 1


def test_a_server_that_stays_in_error_fails_with_its_fault_after_the_retries():
    servers = Servers(["ERROR"] * (nova.DELETE_RETRIES + 2), delete_finds_none=False)
    with pytest.raises(ResourceFailed, match="delete failed: build aborted"):
        nova.wait_deleted(Clients(servers), "s1", timeout=30)
    assert servers.deletes == nova.DELETE_RETRIES

"""What a build asks of the Salt master it runs on: minion keys pre-seeded for builders,
commands to builder minions, the file server's SLS, and events on the master's bus.

Runs inside a runner (or the master's own minion during an orchestration)."""
import logging
import time

import salt.client
import salt.utils.event
import salt.wheel

from .errors import AmiError, InvalidArgument, Timeout
from .saltfiles import SaltFiles, states_outcome

log = logging.getLogger(__name__)


class MinionFailed(AmiError):
    """A builder minion ran something that failed; the message lists what."""


class Master(SaltFiles):

    # ------------------------------------------------------------------ keys
    def new_minion_key(self, minion_id):
        """A key pair for a minion that does not exist yet, accepted at once (as salt-cloud
        does), so that the builder never waits for a human. The private key is returned,
        never stored or logged."""
        keys = salt.wheel.WheelClient(self.opts).cmd("key.gen_accept", [minion_id], print_event=False)
        if not keys or "priv" not in keys:
            raise AmiError(f"the master could not make a key for minion {minion_id}: {keys}")
        return keys

    def delete_minion_key(self, minion_id):
        salt.wheel.WheelClient(self.opts).cmd("key.delete", [minion_id], print_event=False)

    # ------------------------------------------------------------------ the builder's view of us
    def address(self, wanted=None):
        """How a builder reaches this master: the flavour's ``master``, else ami:master in
        the master config, else the interface the master listens on."""
        host = wanted or self.opts.get("ami", {}).get("master") or self.opts.get("interface")
        if not host or host in ("0.0.0.0", "::"):
            raise InvalidArgument("the builder needs an address for this master: set `master` in the "
                                  "flavour or `ami: {master: ADDRESS}` in the master config (the master "
                                  f"listens on {host or 'an unknown interface'})")
        return {"master": host, "master_port": self.opts["ret_port"], "publish_port": self.opts["publish_port"]}

    # ------------------------------------------------------------------ minions
    def _client(self):
        return salt.client.get_local_client(mopts=self.opts)

    def call(self, minion_id, fun, args=(), kwargs=None, timeout=300):
        """What ``fun`` returned on the minion, within ``timeout`` seconds. Not through
        LocalClient.cmd: its timeout is extended for as long as the minion says the job still
        runs, so a stuck state would hold the build for ever."""
        client = self._client()
        pub = client.run_job(minion_id, fun, list(args), kwarg=kwargs or {}, timeout=timeout, listen=True)
        if not pub or not pub.get("jid"):
            raise AmiError(f"the master could not send {fun} to minion {minion_id}")
        deadline = time.monotonic() + timeout
        tag = f"salt/job/{pub['jid']}/ret/{minion_id}"
        for event in client.get_returns_no_block(tag):
            if event and event.get("tag") == tag:
                out = event["data"]
                break
            if time.monotonic() > deadline:
                raise Timeout(f"minion {minion_id} did not answer {fun} within {timeout}s")
        if out.get("retcode", 0) not in (0, None) and not isinstance(out.get("return"), dict):
            raise MinionFailed(f"{fun} on {minion_id} failed: {out.get('return')}")
        return out.get("return")

    def wait_minion(self, minion_id, timeout):
        """Until the builder's minion has started and answers; its start event or a ping."""
        deadline = time.monotonic() + timeout
        bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
        try:
            while time.monotonic() < deadline:
                if self._client().cmd(minion_id, "test.ping", timeout=5).get(minion_id) is True:
                    return
                bus.get_event(wait=min(5, max(deadline - time.monotonic(), 0.1)),
                              tag=f"salt/minion/{minion_id}/start")
        finally:
            bus.destroy()
        raise Timeout(f"timed out after {timeout}s waiting for the builder's minion {minion_id} to start "
                      "and answer (check the server's console output)")

    def apply(self, minion_id, sls, test=False, timeout=1800):
        """state.apply on a minion, with the minion's own pillar (no pillar argument: a job's
        arguments are logged and published, see build_pillar.py); returns {"changed": [...],
        "states": n}; any failed state raises MinionFailed listing each failure with its comment."""
        ret = self.call(minion_id, "state.apply", [",".join(sls)], {"test": test}, timeout=timeout)
        return states_outcome(ret, f"state.apply {','.join(sls)} on {minion_id}", MinionFailed, test)

    # ------------------------------------------------------------------ events
    def fire(self, tag, data):
        bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        try:
            bus.fire_event(data, tag)
        finally:
            bus.destroy()


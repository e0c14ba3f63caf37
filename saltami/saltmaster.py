"""What a build asks of the Salt master it runs on: minion keys pre-seeded for builders,
commands to builder minions, the file server's SLS, and events on the master's bus.

Runs inside a runner (or the master's own minion during an orchestration)."""
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import time

import salt.client
import salt.utils.event
import salt.wheel

from .errors import AmiError, InvalidArgument, Timeout
from .saltfiles import SaltFiles, states_outcome

log = logging.getLogger(__name__)

# the grain a build's minion presents with its own new key: the master accepts the key when
# the grain's value is one of the lines of <autosign_grains_dir>/ami_autosign
AUTOSIGN_GRAIN = "ami_autosign"
AUTOSIGN_CONFIG = "autosign_grains_dir: /etc/salt/autosign_grains"
# the pillarenv of a build's minions: one no master has, so that they compile no pillar from
# the master's top file and have the ami ext_pillar's alone (pipeline/minion_server.py)
NO_PILLARENV = "__salt_ami_no_top_pillar__"
# seconds a ping of a builder's minion waits: at first, at most, and once it has said it started
PING_FIRST, PING_MAX, PING_CONNECTED = 5, 30, 120


def master_pillar(opts, saltenv="base"):
    """The master's own pillar. The opts may be those of another minion's pillar compile (the
    ami ext_pillar's), whose pillarenv, a build minion's, has no top file: not the master's."""
    import salt.pillar

    if opts.get("pillarenv") == NO_PILLARENV:
        opts = {**opts, "pillarenv": None}
    return salt.pillar.Pillar(opts, {}, opts["id"], saltenv).compile_pillar()


def token_id(token):
    """What a build records of an admission token: its hash, enough to revoke it."""
    return hashlib.sha256(token.encode()).hexdigest()


class MinionFailed(AmiError):
    """A builder minion ran something that failed; the message lists what."""


class Master(SaltFiles):

    # ------------------------------------------------------------------ keys
    def check_admission(self):
        """A build's minions make their own keys and are accepted through the master's
        autosign_grains_dir, which must be configured; InvalidArgument says what to add."""
        directory = self.opts.get("autosign_grains_dir")
        if not directory:
            raise InvalidArgument(
                "the builder's minion makes its own key, which the master accepts with a one-time "
                "token of the build (Salt's autosign_grains): the master's config has no "
                f"autosign_grains_dir; add\n{AUTOSIGN_CONFIG}\nto it and restart the master")
        return directory

    @contextlib.contextmanager
    def _admissions(self):
        """The tokens in the autosign grain file, to change under a lock: builds run side by side."""
        directory = self.check_admission()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, AUTOSIGN_GRAIN)
        with open(f"{path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path) as f:
                    tokens = [line.strip() for line in f if line.strip() and not line.startswith("#")]
            except FileNotFoundError:
                tokens = []
            yield tokens
            # the master ignores a file that others may write; nobody but it need read it
            fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# one-time tokens of running salt-ami builds (saltami/saltmaster.py)\n")
                f.writelines(f"{token}\n" for token in tokens)
            os.replace(f"{path}.tmp", path)

    @staticmethod
    def new_token():
        """A one-time token with which a minion that makes its own key is accepted at once (so
        that a builder never waits for a human), for the user-data of one build's minion: the
        only secret it carries. Never stored or logged: the build records ``token_id``."""
        return secrets.token_hex(24)

    def admit(self, token):
        """From now on until ``revoke``, a minion presenting ``token`` is accepted."""
        with self._admissions() as tokens:
            tokens.append(token)

    def revoke(self, token_hash):
        """Take the token whose ``token_id`` is ``token_hash`` out of the master's autosign
        grains; True if it was there."""
        with self._admissions() as tokens:
            kept = [t for t in tokens if token_id(t) != token_hash]
            found = len(kept) != len(tokens)
            tokens[:] = kept
        return found

    def accepted(self, minion_id):
        """Whether the master has accepted the minion's key."""
        import salt.key

        return minion_id in salt.key.get_key(self.opts).list_keys().get("minions", [])

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
        """Until the builder's minion has started and answers a ping. A ping sent before the
        minion is connected is lost, and one that is connected may take long to answer on a
        slow machine (a job is a new process there): pings wait longer each time, and a
        start event on the bus is answered with a ping that waits as long as it takes."""
        deadline = time.monotonic() + timeout
        bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
        ping = PING_FIRST
        try:
            while time.monotonic() < deadline:
                left = max(deadline - time.monotonic(), 0.1)
                try:
                    # a job for a minion the master has no key of yet goes nowhere, and salt's
                    # client prints so on the runner's output
                    if self.accepted(minion_id) and self.call(minion_id, "test.ping", timeout=min(ping, left)) is True:
                        return
                except (Timeout, AmiError):
                    pass
                started = bus.get_event(wait=min(5, max(deadline - time.monotonic(), 0.1)),
                                        tag=f"salt/minion/{minion_id}/start")
                ping = PING_CONNECTED if started else min(ping * 2, PING_MAX)
        finally:
            bus.destroy()
        raise Timeout(f"timed out after {timeout}s waiting for the builder's minion {minion_id} to start "
                      "and answer (check the server's console output)")

    def apply(self, minion_id, sls, test=False, timeout=1800, settings=None):
        """state.apply on a minion, with the minion's own pillar: the flavour's pillar never
        goes as an argument, since a job's arguments are logged and published (see
        build_pillar.py); ``settings`` is pillar that may (no secret: the build's own
        settings). Returns {"changed": [...], "states": n, "returns": the states' returns};
        any failed state raises MinionFailed listing each failure with its comment."""
        kwargs = {"test": test, **({"pillar": settings} if settings else {})}
        ret = self.call(minion_id, "state.apply", [",".join(sls)], kwargs, timeout=timeout)
        return {**states_outcome(ret, f"state.apply {','.join(sls)} on {minion_id}", MinionFailed, test),
                "returns": ret}

    # ------------------------------------------------------------------ events
    def fire(self, tag, data):
        bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        try:
            bus.fire_event(data, tag)
        finally:
            bus.destroy()


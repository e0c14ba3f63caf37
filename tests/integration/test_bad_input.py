"""Bad input, one row per kind: each build fails through the real runner (`salt-run
ami.build`, the same steps the orchestration runs) with an error that names the bad value,
and nothing is created for it (servers, volumes, images, minion keys). Flavours are given
inline (the runner's ``definition``), named for this run and this kind, so that what the
cloud holds can be counted by name while other sessions build on it."""
import json
import socket
import time

import pytest

from helpers import NOTHING, RUN, cloud_inventory
from saltami import flavour

PREFIX = f"bad-{RUN[-8:]}"
# a cloud that does not answer must fail within this, not hang
NO_ANSWER_TIMEOUT = 3


@pytest.fixture(scope="module")
def silent_port():
    """A socket that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def closed_port():
    """A port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port


def amitest(**keys):
    return {"extends": "amitest", **keys}


def cloud(profile, **auth):
    return dict(profile, auth=auth, api_timeout=NO_ANSWER_TIMEOUT)


# kind: (flavour definition (None: the flavour is not in pillar), cloud (None: the master's),
#        what the message must say); {name} is the case's flavour name, {closed}/{silent} the ports
BAD_INPUT = {
    "unknown flavour": (None, None, ["no flavour '{name}'", "known flavours"]),
    "unknown base image": (amitest(base={"name": "no-such-base-image"}), None, ["no-such-base-image"]),
    "unknown SLS": (amitest(sls=["nosuchsls.here"]), None, ["no SLS 'nosuchsls.here'"]),
    "unknown network": (amitest(networks=["no-such-net"]), None,
                        ["network 'no-such-net' does not exist", "networks:"]),
    "unknown nova flavor": (amitest(flavor="no-such-flavor"), None,
                            ["flavor 'no-such-flavor' does not exist", "localcloud.small"]),
    "unknown key pair": (amitest(key_name="no-such-keypair"), None, ["key pair 'no-such-keypair' does not exist"]),
    "unknown security group": (amitest(security_groups=["no-such-group"]), None, ["no-such-group", "default"]),
    "unknown flavour key": (amitest(flavr="localcloud.small"), None, ["'flavr'", "did you mean 'flavor'"]),
    "wrong type: integer": (amitest(keep="three"), None, ["key 'keep'", "'three'", "integers >= 1"]),
    "wrong type: list": (amitest(sls={"amitest": True}), None, ["key 'sls'", "must be a list"]),
    "wrong type: timeout": (amitest(timeouts={"boot": "soon"}), None, ["key 'timeouts.boot'", "'soon'"]),
    "value not allowed": (amitest(visibility="everyone"), None, ["'everyone' is not accepted", "private"]),
    "extends loop": ({"extends": "{name}"}, None, ["inheritance loop {name} -> {name}"]),
    "extends unknown flavour": (amitest(extends="no-such-parent"), None, ["no flavour 'no-such-parent'"]),
    "image names that would collide": (amitest(image_name="{flavour}-{date}"), None,
                                       ["'{{flavour}}-{{date}}' would give two builds the same name"]),
    "reserved image property": (amitest(properties={"ami_status": "promoted"}), None,
                                ["key 'properties.ami_status'", "reserved"]),
    "bad credentials": (amitest(), {"password": "not-the-password"},
                        ["authentication refused by http://127.0.0.1:5000/v3 (user 'demo')"]),
    "unknown cloud": (amitest(), "no-such-cloud", ["cloud 'no-such-cloud'", "localcloud"]),
    "cloud where nothing listens": (amitest(), {"auth_url": "http://127.0.0.1:{closed}/v3"},
                                    ["identity service http://127.0.0.1:{closed}/v3 unreachable"]),
    "cloud that never answers": (amitest(), {"auth_url": "http://127.0.0.1:{silent}/v3"},
                                 ["identity service http://127.0.0.1:{silent}/v3 unreachable or not answering",
                                  "timed out"]),
}


# no check of the flavour schema accepts it: every key must refuse it
WRONG = 1.5


def schema_cases():
    """(definition, the keys its error must name) from the flavour schema itself
    (saltami.flavour): a wrong value at every key, and at every key of the mappings with
    keys of their own. A key added without a check, or problems no longer all reported in
    one error, fail here."""
    top = {key: WRONG for key in flavour.FIELDS if key != "extends"}
    nested = {"extends": "amitest", **{section: {key: WRONG for key in fields} for section, fields in
                                       (("base", flavour.BASE_FIELDS), ("test", flavour.TEST_FIELDS),
                                        ("timeouts", flavour.TIMEOUTS))}}
    return {
        "every key": (top, list(top)),
        "every key of base, test and timeouts": (
            nested, [f"{section}.{key}" for section in ("base", "test", "timeouts") for key in nested[section]]),
        # checked on its own, before the flavours are merged
        "extends": ({"extends": WRONG}, ["extends"]),
    }


@pytest.mark.parametrize("case", list(schema_cases()))
def test_a_wrong_value_at_any_key_of_the_schema_is_named(case, salt_run, module_clients, salt_key):
    definition, keys = schema_cases()[case]
    name = f"{PREFIX}-schema-{case.replace(' ', '-').replace(',', '')}"
    ret = salt_run.run("ami.build", flavour=name, definition=definition)
    out = ret.stdout + ret.stderr
    assert ret.returncode != 0, out
    missing = [key for key in keys if f"flavour '{name}': key '{key}': " not in out]
    assert missing == [], out
    assert str(WRONG) in out and "Traceback" not in out
    assert cloud_inventory(module_clients, salt_key, name) == NOTHING


@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_bad_input_fails_naming_the_value_and_creates_nothing(kind, salt_run, module_clients, salt_key,
                                                              builds_dir, cloud_profile, closed_port, silent_port):
    definition, cloud_arg, expected = BAD_INPUT[kind]
    name = f"{PREFIX}-{kind.replace(' ', '-').replace(':', '')}"
    fill = {"name": name, "closed": closed_port, "silent": silent_port}
    kwargs = {}
    if definition is not None:
        kwargs["definition"] = {k: v.format(**fill) if k == "extends" else v for k, v in definition.items()}
    if isinstance(cloud_arg, dict):
        kwargs["cloud"] = cloud(cloud_profile, **{k: v.format(**fill) for k, v in cloud_arg.items()})
    elif cloud_arg is not None:
        kwargs["cloud"] = dict(cloud_profile, cloud=cloud_arg)

    t0 = time.monotonic()
    ret = salt_run.run("ami.build", flavour=name, **kwargs)
    seconds = time.monotonic() - t0
    out = ret.stdout + ret.stderr
    assert ret.returncode != 0, out
    for words in expected:
        assert words.format(**fill) in out, out
    assert "Traceback" not in out and "not-the-password" not in out
    # a cloud that does not answer fails in bounded time (api_timeout), twice over at most:
    # keystoneauth tries version discovery, then the versioned URL
    assert seconds < 60, seconds
    assert cloud_inventory(module_clients, salt_key, name) == NOTHING
    # nor was anything tried: a build that got as far as a manifest stopped in its resolve step
    for manifest in builds_dir.glob("*.json"):
        data = json.loads(manifest.read_text())
        if data.get("flavour") == name:
            assert [s["name"] for s in data["steps"]] == ["resolve"] and not any(data["resources"].values())

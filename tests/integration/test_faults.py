"""Faults, injected into the local cloud (tests/localcloud/faults.py) while a real master
builds: for each, the build fails with a message naming the step, and afterwards the cloud
holds exactly what it held before (servers, volumes, ports, key pairs, images, minion keys of
this test) and no image carries the final name. Then the same for the library's direct
transfers and volume calls, which the volume bake and the local provider build on."""
import contextlib
import json
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import RUN, MiB, booted, inventory, random_file
from localcloud.faults import FaultProxy, injected, stale_drivers
from saltami import pipeline, provenance
from saltami.cloud import auth, cinder, glance, nova
from saltami.errors import AmiError, CloudError, ResourceFailed

# the fault builds run side by side: most fail early, and a 2-core machine copes with four
BUILDS_AT_ONCE = 4

# what each fault does, the step it must fail, and words its message must have.
#   driver: (point, role whose server it hits, action): drivers/faultfile.py
#   proxy: (service type, rule on the FaultProxy in front of it); cloud: more profile keys
#   flavour: keys over amitest-fault (conftest.py)
BUILD_FAULTS = {
    "keystone-503": dict(step="resolve", says="HTTP 503",
                         proxy=("identity", lambda p: p.answer("POST", r"/auth/tokens$", 503))),
    "glance-500-find-base": dict(step="resolve", says="HTTP 500",
                                 proxy=("image", lambda p: p.answer("GET", r"^/v2/images", 500))),
    "nova-create-500": dict(step="boot", says="nova: boot",
                            proxy=("compute", lambda p: p.answer("POST", r"/servers$", 500))),
    "nova-create-409": dict(step="boot", says="HTTP 409",
                            proxy=("compute", lambda p: p.answer("POST", r"/servers$", 409))),
    "nova-api-hangs": dict(step="boot", says="timed out", cloud={"api_timeout": 5},
                           proxy=("compute", lambda p: p.hang("POST", r"/servers$"))),
    "spawn-error": dict(step="boot", says="server went to ERROR", driver=("nova.spawn", "builder", "error")),
    "never-active": dict(step="boot", says="to become ACTIVE", driver=("nova.spawn", "builder", "hang"),
                         flavour={"timeouts": {"boot": 10}}),
    "minion-never-connects": dict(step="boot", says="builder's minion",
                                  driver=("nova.spawn", "builder", "no-user-data"),
                                  flavour={"timeouts": {"minion": 10}}),
    "sls-fails": dict(step="provision", says="amitest-broken-step", flavour={"sls": ["amitestbroken"]}),
    "apply-timeout": dict(step="provision", says="did not answer state.apply",
                          flavour={"sls": ["amitestslow"], "timeouts": {"apply": 5}}),
    "scrub-fails": dict(step="scrub", says="scrub of / incomplete", flavour={"sls": ["amitestnoscrub"]}),
    # the builder's second server action: the first is os-stop
    "createimage-500": dict(step="snapshot", says="createImage",
                            proxy=("compute", lambda p: p.answer("POST", r"/action$", 500, nth=2))),
    "snapshot-error": dict(step="snapshot", says="it is gone", driver=("nova.snapshot", "builder", "error")),
    "snapshot-never-ends": dict(step="snapshot", says="to become active", driver=("nova.snapshot", "builder", "hang"),
                                flavour={"timeouts": {"snapshot": 10}}),
    "glance-500-candidate-properties": dict(step="snapshot", says="HTTP 500",
                                            proxy=("image", lambda p: p.answer("PATCH", r"^/v2/images/", 500, nth=1))),
    "nova-delete-500": dict(step="release", says="HTTP 500",
                            proxy=("compute", lambda p: p.answer("DELETE", r"/servers/", 500, nth=1))),
    "validator-error": dict(step="validate", says="server went to ERROR", driver=("nova.spawn", "validator", "error"),
                            flavour={"validate": True}),
    "validate-test-fails": dict(step="validate", says="exited 1",
                                flavour={"validate": True, "test": {"cmd": "test -e /etc/ami-test/never"}}),
    # promote's first image update; then its tag, after the rename to the final name
    # a 503 is ridden out (retried, saltami/cloud/api.py): a 500 is not
    "glance-500-promote": dict(step="promote", says="HTTP 500", flavour={"validate": True},
                               proxy=("image", lambda p: p.answer("PATCH", r"^/v2/images/", 500, nth=2))),
    "glance-409-tag-after-rename": dict(step="promote", says="HTTP 409", flavour={"validate": True},
                                        proxy=("image", lambda p: p.answer("PUT", r"/tags/", 409))),
}


def minion_keys(salt_key):
    keys = json.loads(salt_key.run("--list-all", "--out=json").stdout)
    return [k for ks in keys.values() for k in ks]


@contextlib.contextmanager
def proxied(demo_session, service_type):
    """A FaultProxy in front of the service, and the service's endpoint through it."""
    endpoint = demo_session.get_endpoint(service_type=service_type, interface="public")
    parts = urllib.parse.urlsplit(endpoint)
    with FaultProxy(f"{parts.scheme}://{parts.netloc}") as proxy:
        yield proxy, proxy.url_for(endpoint)


def through_proxy(cloud_profile, service_type, url, **more):
    """The cloud profile with one service (or keystone) reached through a proxy."""
    if service_type == "identity":
        return dict(cloud_profile, auth={"auth_url": url}, **more)
    return dict(cloud_profile, **{f"{service_type.replace('-', '_')}_endpoint_override": url}, **more)


@contextlib.contextmanager
def armed(fault, flavour, cloud_profile, demo_session):
    """The fault in place; yields (the cloud profile the build must use or None, the
    proxy rule or None)."""
    with contextlib.ExitStack() as stack:
        cloud = rule = None
        if "driver" in fault:
            point, role, action = fault["driver"]
            stack.enter_context(injected(point, re.escape(f"ami-{role}-{flavour}-"), action))
        if "proxy" in fault:
            service_type, arm = fault["proxy"]
            proxy, url = stack.enter_context(proxied(demo_session, service_type))
            rule = arm(proxy)
            cloud = through_proxy(cloud_profile, service_type, url, **fault.get("cloud", {}))
        yield cloud, rule


def final_named(clients, flavour):
    """Images under the flavour's final name pattern ({flavour}-{date}-{time})."""
    return [i["id"] for i in clients.glance.images.list(filters={"visibility": "all"})
            if re.fullmatch(rf"{re.escape(flavour)}-\d{{8}}-\d{{6}}", i.get("name") or "")]


@pytest.fixture(scope="module")
def fault_builds(salt_master, salt_key, module_clients, cloud_profile, demo_session):
    """Every build fault's build, BUILDS_AT_ONCE at a time, the latest steps first:
    {kind: future of (what the cloud held before, salt-run's result, seconds, proxy rule)}."""
    def build(kind):
        fault, flavour = BUILD_FAULTS[kind], f"{RUN}-{kind}"
        definition = {"extends": "amitest-fault", **fault.get("flavour", {})}
        with armed(fault, flavour, cloud_profile, demo_session) as (cloud, rule):
            t0 = time.monotonic()
            # a CLI object per thread: they keep state between runs
            ret = salt_master.salt_run_cli(timeout=900).run(
                "ami.build", flavour=flavour, definition=definition, **({"cloud": cloud} if cloud else {}))
            return befores[kind], ret, time.monotonic() - t0, rule

    kinds = [k for k in BUILD_FAULTS if not ("driver" in BUILD_FAULTS[k] and stale_drivers())]
    keys = minion_keys(salt_key)
    befores = {kind: inventory(module_clients, f"{RUN}-{kind}", keys) for kind in kinds}
    order = [s.NAME for s in pipeline.steps_for("snapshot")]
    with ThreadPoolExecutor(BUILDS_AT_ONCE) as pool:
        return {kind: pool.submit(build, kind)
                for kind in sorted(kinds, key=lambda k: -order.index(BUILD_FAULTS[k]["step"]))}


@pytest.mark.parametrize("kind", list(BUILD_FAULTS))
def test_build_fault_fails_the_step_and_leaves_nothing(kind, request, fault_builds, salt_master, salt_key,
                                                       module_clients):
    fault, flavour = BUILD_FAULTS[kind], f"{RUN}-{kind}"
    if kind not in fault_builds:
        request.getfixturevalue("drivers_with_faults")
    before, ret, seconds, rule = fault_builds[kind].result()
    out = ret.stdout + ret.stderr
    assert ret.returncode != 0, out[-2000:]
    if rule is not None:
        assert rule.fired, f"the proxy's rule never matched: {rule.method} {rule.path.pattern}"
    failed = re.search(rf"build ({re.escape(flavour)}-[0-9-]+-[0-9a-f]+): step (\w+) failed: (.*)", out)
    assert failed, out[-2000:]
    build_id, step, reason = failed.groups()
    assert step == fault["step"] and fault["says"] in reason, reason
    assert "cleanup could not remove everything" not in out, out[-2000:]
    manifest = json.loads((Path(salt_master.config["cachedir"]) / "ami" / "builds" / f"{build_id}.json").read_text())
    assert manifest["status"] == "cleaned" and manifest["failed_step"] == fault["step"]
    assert not any(manifest["resources"].values()), manifest["resources"]
    servers = [manifest[role]["server"] for role in ("builder", "validator") if role in manifest]
    assert inventory(module_clients, flavour, minion_keys(salt_key), servers) == before
    assert not set(servers) & {s.id for s in module_clients.nova.servers.list()}
    assert final_named(module_clients, flavour) == [] and provenance.find_promoted(module_clients, flavour) == []
    print(f"{kind}: step {step} failed after {seconds:.1f}s: {reason[:200]}")


# ----------------------------------------------------------------------------- direct transfers
@pytest.mark.parametrize("fault", ["503-after-1MiB", "connection-cut-after-1MiB"])
def test_glance_fails_mid_upload_and_the_image_is_deleted(fault, name, clients, cloud_profile, demo_session,
                                                         tmp_path):
    path = random_file(tmp_path / "disk.raw", 8 * MiB)
    before = inventory(clients, name)
    with proxied(demo_session, "image") as (proxy, url):
        rule = (proxy.answer("PUT", r"/file$", 503, after_bytes=MiB) if fault.startswith("503")
                else proxy.cut("PUT", r"/file$", after_bytes=MiB))
        with pytest.raises(AmiError) as e:
            glance.upload(auth.connect(profile=through_proxy(cloud_profile, "image", url)), str(path), name,
                          disk_format="raw")
    assert rule.fired == 1
    assert f"uploading {path} to image" in str(e.value), e.value
    assert inventory(clients, name) == before


def test_endpoint_overrides_send_each_service_through_its_proxy(cloud_profile, demo_session):
    with contextlib.ExitStack() as stack:
        profile = dict(cloud_profile)
        proxies = {}
        for service_type in ("compute", "image", "block-storage", "network"):
            proxies[service_type], url = stack.enter_context(proxied(demo_session, service_type))
            profile = through_proxy(profile, service_type, url)
        clients = auth.connect(profile=profile)
        nova.find_flavor(clients, "localcloud.small")
        glance.find_images(clients, name="no-such-image")
        clients.cinder.volumes.list()
        with pytest.raises(AmiError, match="network 'no-such-net' does not exist"):
            nova.find_network(clients, "no-such-net")
    assert all(p.requests and all(r[2] == "forwarded" for r in p.requests) for p in proxies.values()), \
        {k: p.requests for k, p in proxies.items()}


# ----------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("point", ["nova.attach", "cinder.connect"])
def test_volume_attach_fails_and_is_rolled_back(drivers_with_faults, point, name, clients, base_image):
    volume = cinder.create(clients, 1, name=f"{name}-vol")
    try:
        with booted(clients, base_image["id"], f"{name}-server") as server, \
                injected(point, re.escape(name), "error"):
            with pytest.raises(AmiError) as e:
                nova.attach_volume(clients, server.id, volume["id"], timeout=60)
            assert volume["id"] in str(e.value)
            assert cinder.show(clients, volume["id"])["status"] == "available"
            assert clients.nova.volumes.get_server_volumes(server.id) == []
    finally:
        cinder.delete(clients, volume["id"])


@pytest.mark.parametrize("point", ["cinder.create", "cinder.from_image"])
def test_volume_create_error_deletes_the_volume(drivers_with_faults, point, name, clients, base_image):
    with injected(point, re.escape(name), "error"):
        with pytest.raises(ResourceFailed, match="the volume was deleted"):
            cinder.create(clients, 2, name=f"{name}-vol",
                          image=base_image["id"] if point == "cinder.from_image" else None, timeout=120)


def test_volume_upload_to_image_error_deletes_the_image(drivers_with_faults, name, clients):
    volume = cinder.create(clients, 1, name=f"{name}-vol")
    try:
        with injected("cinder.to_image", re.escape(name), "error"):
            with pytest.raises(CloudError) as e:
                cinder.upload_to_image(clients, volume["id"], f"{name}-image", timeout=120)
        assert volume["id"] in str(e.value) or f"{name}-image" in str(e.value), e.value
        assert cinder.show(clients, volume["id"])["status"] == "available"
    finally:
        cinder.delete(clients, volume["id"])

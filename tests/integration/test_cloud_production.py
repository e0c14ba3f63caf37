"""What a production cloud does that the local cloud does not by itself, made to happen with
the fault proxy (tests/localcloud/faults.py) in front of its services: nova and cinder of
older releases (2023.x: nova 2.95, cinder 3.70; older still), answers lost or refused for a
while (503, 429 with Retry-After, reset connections, a create performed whose answer is lost),
and a second region whose endpoints are the only ones a cloud's region and interface allow."""
import contextlib
import uuid

import pytest
import yaml

from helpers import RUN, MiB, booted, inventory, random_file
from localcloud.faults import FaultProxy
from saltami import provenance
from saltami.cloud import auth, cinder, glance, nova
from test_faults import proxied, through_proxy
from test_modules_nova import call_fails, call_ok

NOVA_2023, CINDER_2023 = "2.95", "3.70"


@contextlib.contextmanager
def fronted(demo_session, cloud_profile, *service_types):
    """A FaultProxy in front of each service; yields (the cloud profile reaching them through
    their proxies, {service type: proxy})."""
    with contextlib.ExitStack() as stack:
        profile, proxies = dict(cloud_profile), {}
        for service_type in service_types:
            proxies[service_type], url = stack.enter_context(proxied(demo_session, service_type))
            profile = through_proxy(profile, service_type, url)
        yield profile, proxies


def asked(proxy):
    """The microversions the requests through the proxy asked for."""
    return {entry["microversion"] for entry in proxy.log if entry["microversion"]}


def nothing_named(clients, fragment):
    return not any(inventory(clients, fragment).values())


def requests_to(proxy, method, path_end):
    return [e for e in proxy.log if e["method"] == method and e["path"].split("?")[0].endswith(path_end)]


# ----------------------------------------------------------------------------- microversions
def test_execution_modules_work_on_a_2023_cloud(name, salt_call, clients, base_image, demo_session, cloud_profile):
    with fronted(demo_session, cloud_profile, "compute", "block-storage") as (profile, proxies):
        proxies["compute"].cap_microversion(NOVA_2023)
        proxies["block-storage"].cap_microversion(CINDER_2023)
        server = call_ok(salt_call, "ami_nova.boot", f"{name}-server", base_image["name"], "localcloud.small",
                         metadata={"purpose": "2023"}, cloud=profile)
        volume = image = None
        try:
            assert server["status"] == "ACTIVE" and server["metadata"] == {"purpose": "2023"}
            assert call_ok(salt_call, "ami_nova.show", f"{name}-server", cloud=profile)["id"] == server["id"]
            volume = call_ok(salt_call, "ami_cinder.create", 1, name=f"{name}-vol", cloud=profile)
            assert volume["status"] == "available"
            attached = call_ok(salt_call, "ami_nova.attach_volume", server["id"], volume["id"], cloud=profile)
            assert attached["volume"] == volume["id"]
            assert call_ok(salt_call, "ami_cinder.show", volume["id"], cloud=profile)["status"] == "in-use"
            call_ok(salt_call, "ami_nova.detach_volume", server["id"], volume["id"], cloud=profile)
            image = call_ok(salt_call, "ami_cinder.upload_to_image", volume["id"], f"{name}-image",
                            visibility="shared", cloud=profile)
            assert image["status"] == "active" and image["visibility"] == "shared"
        finally:
            if image:
                glance.delete(clients, image["id"], force=True)
            nova.delete(clients, server["id"])
            if volume:
                cinder.delete(clients, volume["id"])
    # the newest each service offers, and never a request it refused
    assert asked(proxies["compute"]) == {NOVA_2023} and asked(proxies["block-storage"]) == {CINDER_2023}
    assert not [e for p in proxies.values() for e in p.log if e["what"] != "forwarded"]


def test_a_build_on_a_2023_cloud_survives_a_lost_create_and_a_busy_glance(salt_run, clients, demo_session,
                                                                         cloud_profile):
    """A build through nova 2.95 whose builder's create is performed but answered 502, and
    whose first Glance update is answered 503: one builder, one validator, one image."""
    flavour = f"{RUN}-on-2023"
    try:
        with fronted(demo_session, cloud_profile, "compute", "image") as (profile, proxies):
            proxies["compute"].cap_microversion(NOVA_2023)
            lost = proxies["compute"].answer("POST", r"/servers$", 502, first=1, performed=True)
            busy = proxies["image"].answer("PATCH", r"^/v2/images/", 503, first=1)
            ret = salt_run.run("ami.build", flavour=flavour, definition={"extends": "amitest"}, cloud=profile)
        assert ret.returncode == 0, (ret.stdout + ret.stderr)[-3000:]
        assert lost.fired == 1 and busy.fired == 1
        # the builder's create was not asked again: the lookup found it
        assert len(requests_to(proxies["compute"], "POST", "/servers")) == 2
        assert asked(proxies["compute"]) == {NOVA_2023}
        (image,) = provenance.find_promoted(clients, flavour)
        assert inventory(clients, flavour)["images"] == [image["id"]]
        assert not any(v for k, v in inventory(clients, flavour).items() if k != "images")
    finally:
        for image in glance.find_images(clients, properties={"ami_flavour": flavour}, active_only=False):
            glance.delete(clients, image["id"], force=True)


def test_a_cloud_too_old_for_a_feature_is_named_before_anything_is_made(name, salt_call, salt_run, clients,
                                                                        base_image, demo_session, cloud_profile):
    """nova 2.36 cannot boot a server without networks (2.37), cinder 3.0 cannot upload with
    a visibility (3.1): the call, and a build at its resolve step, say so and make nothing."""
    flavour = f"{RUN}-too-old"
    volume = cinder.create(clients, 1, name=f"{name}-vol")
    try:
        with fronted(demo_session, cloud_profile, "compute", "block-storage") as (profile, proxies):
            proxies["compute"].cap_microversion("2.36")
            proxies["block-storage"].cap_microversion("3.0")
            needs = "booting a server with networks 'none' or 'auto' needs compute API microversion 2.37 or later"
            offers = "offers microversions up to 2.36"
            out = call_fails(salt_call, "ami_nova.boot", f"{name}-server", base_image["name"], "localcloud.small",
                             cloud=profile)
            assert needs in out and offers in out, out
            ret = salt_run.run("ami.build", flavour=flavour, definition={"extends": "amitest"}, cloud=profile)
            out = ret.stdout + ret.stderr
            assert ret.returncode != 0 and "step resolve failed" in out and needs in out and offers in out, out
            out = call_fails(salt_call, "ami_cinder.upload_to_image", volume["id"], f"{name}-image", cloud=profile)
            assert ("volume upload-to-image with visibility and protected needs block-storage API microversion "
                    "3.1 or later") in out and "offers microversions up to 3.0" in out, out
        assert not requests_to(proxies["compute"], "POST", "/servers")
        assert not [e for e in proxies["block-storage"].log if e["method"] == "POST"]
        assert not [e for p in proxies.values() for e in p.log if e["what"] == "refused-microversion"]
        assert nothing_named(clients, flavour)
        assert inventory(clients, name)["images"] == []
    finally:
        cinder.delete(clients, volume["id"])


# ----------------------------------------------------------------------------- retries
def test_503_and_429_with_retry_after_are_waited_out(salt_call, base_image, demo_session, cloud_profile):
    with fronted(demo_session, cloud_profile, "image") as (profile, proxies):
        proxy = proxies["image"]
        slow = proxy.answer("GET", r"^/v2/images\?", 429, first=1, headers={"Retry-After": "3"})
        busy = proxy.answer("GET", r"^/v2/images\?", 503, first=2)
        found = call_ok(salt_call, "ami_glance.find", name=base_image["name"], cloud=profile)
    assert base_image["id"] in [i["id"] for i in found]
    assert slow.fired == 1 and busy.fired == 2
    listed = requests_to(proxy, "GET", "/v2/images")
    assert [e["what"] for e in listed] == ["status", "status", "status", "forwarded"]
    # Retry-After said 3 seconds, where the first backoff is 1
    assert listed[1]["time"] - listed[0]["time"] >= 3


def test_a_reset_connection_is_ridden_out(name, salt_call, base_image, demo_session, cloud_profile):
    with fronted(demo_session, cloud_profile, "compute") as (profile, proxies):
        reset = proxies["compute"].reset("GET", r"/flavors/detail", first=1)
        out = call_fails(salt_call, "ami_nova.boot", f"{name}-server", base_image["name"], "no.such.flavor",
                         cloud=profile)
    # the flavor list came on the second try, and the error is the one it gives
    assert reset.fired == 1 and "flavor 'no.such.flavor' does not exist (flavors: localcloud.medium" in out, out
    assert [e["what"] for e in requests_to(proxies["compute"], "GET", "/flavors/detail")] == ["reset", "forwarded"]


def single(found, name):
    """The one thing named ``name`` among ``found`` (dicts or objects with id and name)."""
    named = [f for f in found if (f.get("name") if isinstance(f, dict) else f.name) == name]
    assert len(named) == 1, named
    return named[0]["id"] if isinstance(named[0], dict) else named[0].id


@pytest.mark.parametrize("fault", ["502-after-create", "reset-after-create", "503-before-create",
                                   "reset-before-create"])
def test_a_server_create_whose_answer_is_lost_makes_one_server(fault, name, salt_call, clients, base_image,
                                                               demo_session, cloud_profile):
    with fronted(demo_session, cloud_profile, "compute") as (profile, proxies):
        arm = {"502-after-create": lambda p: p.answer("POST", r"/servers$", 502, first=1, performed=True),
               "reset-after-create": lambda p: p.reset("POST", r"/servers$", first=1, performed=True),
               "503-before-create": lambda p: p.answer("POST", r"/servers$", 503, first=2),
               "reset-before-create": lambda p: p.reset("POST", r"/servers$", first=1)}[fault]
        rule = arm(proxies["compute"])
        server = call_ok(salt_call, "ami_nova.boot", f"{name}-server", base_image["name"], "localcloud.small",
                         metadata={"fault": fault}, cloud=profile)
    try:
        assert rule.fired >= 1 and server["status"] == "ACTIVE"
        assert single(clients.nova.servers.list(), f"{name}-server") == server["id"]
        # a create performed is looked up, not asked again; one not performed is asked again
        creates = len(requests_to(proxies["compute"], "POST", "/servers"))
        assert creates == {"502-after-create": 1, "reset-after-create": 1, "503-before-create": 3,
                           "reset-before-create": 2}[fault]
    finally:
        nova.delete(clients, server["id"])


@pytest.mark.parametrize("fault", ["502-after-create", "reset-before-create"])
def test_a_volume_create_whose_answer_is_lost_makes_one_volume(fault, name, salt_call, clients, demo_session,
                                                               cloud_profile):
    with fronted(demo_session, cloud_profile, "block-storage") as (profile, proxies):
        proxy = proxies["block-storage"]
        rule = (proxy.answer("POST", r"/volumes$", 502, first=1, performed=True) if fault == "502-after-create"
                else proxy.reset("POST", r"/volumes$", first=1))
        volume = call_ok(salt_call, "ami_cinder.create", 1, name=f"{name}-vol", metadata={"fault": fault},
                         cloud=profile)
    try:
        assert rule.fired == 1 and volume["status"] == "available"
        assert single(cinder.list_volumes(clients), f"{name}-vol") == volume["id"]
        assert len(requests_to(proxy, "POST", "/volumes")) == (1 if fault == "502-after-create" else 2)
    finally:
        cinder.delete(clients, volume["id"])


def test_an_image_create_whose_answer_is_lost_makes_one_image(name, salt_call, clients, demo_session, cloud_profile,
                                                              tmp_path):
    path = random_file(tmp_path / "disk.raw", MiB)
    with fronted(demo_session, cloud_profile, "image") as (profile, proxies):
        lost = proxies["image"].answer("POST", r"^/v2/images$", 502, first=1, performed=True)
        image = call_ok(salt_call, "ami_glance.upload", str(path), name, disk_format="raw", cloud=profile)
    try:
        assert lost.fired == 1 and image["status"] == "active" and image["size"] == MiB
        assert single(glance.find_images(clients, name=name, active_only=False), name) == image["id"]
    finally:
        glance.delete(clients, image["id"], force=True)


@pytest.fixture(scope="module")
def server(module_clients, base_image):
    """A server for the snapshot and attach tests."""
    with booted(module_clients, base_image["id"], f"{RUN}-production-{uuid.uuid4().hex[:6]}") as server:
        yield server


def test_a_snapshot_whose_answer_is_lost_makes_one_image(name, salt_call, clients, server, demo_session,
                                                         cloud_profile):
    with fronted(demo_session, cloud_profile, "compute") as (profile, proxies):
        lost = proxies["compute"].answer("POST", rf"/servers/{server.id}/action$", 502, first=1, performed=True)
        image = call_ok(salt_call, "ami_nova.snapshot", server.id, name, cloud=profile)
    try:
        assert lost.fired == 1 and image["status"] == "active"
        assert single(glance.find_images(clients, name=name, active_only=False), name) == image["id"]
        assert len(requests_to(proxies["compute"], "POST", "/action")) == 1
    finally:
        glance.delete(clients, image["id"], force=True)


def test_an_attach_and_an_upload_whose_answers_are_lost_are_done_once(name, salt_call, clients, server,
                                                                      demo_session, cloud_profile):
    volume = cinder.create(clients, 1, name=f"{name}-vol")
    image = None
    try:
        with fronted(demo_session, cloud_profile, "compute", "block-storage") as (profile, proxies):
            attach = proxies["compute"].answer("POST", r"/os-volume_attachments$", 502, first=1, performed=True)
            upload = proxies["block-storage"].answer("POST", rf"/volumes/{volume['id']}/action$", 502, first=1,
                                                     performed=True)
            call_ok(salt_call, "ami_nova.attach_volume", server.id, volume["id"], cloud=profile)
            assert [a.volumeId for a in clients.nova.volumes.get_server_volumes(server.id)] == [volume["id"]]
            call_ok(salt_call, "ami_nova.detach_volume", server.id, volume["id"], cloud=profile)
            image = call_ok(salt_call, "ami_cinder.upload_to_image", volume["id"], f"{name}-image", cloud=profile)
        assert attach.fired == 1 and upload.fired == 1 and image["status"] == "active"
        assert single(glance.find_images(clients, name=f"{name}-image", active_only=False), f"{name}-image") \
            == image["id"]
        assert len(requests_to(proxies["compute"], "POST", "/os-volume_attachments")) == 1
        assert len(requests_to(proxies["block-storage"], "POST", "/action")) == 1
    finally:
        if image:
            glance.delete(clients, image["id"], force=True)
        if volume["id"] in [a.volumeId for a in clients.nova.volumes.get_server_volumes(server.id)]:
            nova.detach_volume(clients, server.id, volume["id"])
        cinder.wait_status(clients, volume["id"], "available")
        cinder.delete(clients, volume["id"])


# ----------------------------------------------------------------------------- region and interface
@pytest.fixture
def second_region(admin_session, demo_session):
    """A keystone region of this run's own whose services (internal endpoints only, which
    clients of other regions or interfaces never pick) are recording proxies in front of
    the real ones: yields (region id, {service type: proxy})."""
    def identity(method, path, **kw):
        return admin_session.request(path, method, endpoint_filter={"service_type": "identity"}, **kw)

    region = f"{RUN}-region-{uuid.uuid4().hex[:6]}"
    identity("POST", "/regions", json={"region": {"id": region, "description": "salt-ami test"}})
    made = []
    try:
        with contextlib.ExitStack() as stack:
            proxies = {}
            for service_type in ("compute", "image", "block-storage", "network"):
                (service,) = identity("GET", f"/services?type={service_type}").json()["services"]
                (endpoint,) = [e for e in identity("GET", f"/endpoints?service_id={service['id']}").json()["endpoints"]
                               if e["region_id"] == "RegionOne" and e["interface"] == "public"]
                url = endpoint["url"]
                upstream = url.split("/", 3)[:3]
                proxies[service_type] = stack.enter_context(FaultProxy("/".join(upstream)))
                made.append(identity("POST", "/endpoints", json={"endpoint": {
                    "service_id": service["id"], "region_id": region, "interface": "internal",
                    "url": proxies[service_type].url_for(url)}}).json()["endpoint"]["id"])
            try:
                yield region, proxies
            finally:
                for endpoint_id in made:
                    identity("DELETE", f"/endpoints/{endpoint_id}")
    finally:
        identity("DELETE", f"/regions/{region}")


def test_every_service_is_reached_in_the_clouds_region_and_interface(name, salt_call, base_image, second_region,
                                                                      localcloud, tmp_path):
    region, proxies = second_region
    # a multi-region cloud's clouds.yaml lists its regions
    clouds_yaml = tmp_path / "clouds.yaml"
    clouds_yaml.write_text(yaml.safe_dump({"clouds": {"multi": {
        "auth": localcloud.clouds["localcloud"]["auth"], "identity_api_version": 3,
        "regions": ["RegionOne", region], "interface": "internal"}}}))
    clouds_yaml.chmod(0o600)
    profile = {"cloud": "multi", "clouds_yaml": str(clouds_yaml), "region_name": region}
    out = call_fails(salt_call, "ami_nova.boot", f"{name}-server", base_image["name"], "localcloud.small",
                     networks=["no-such-net"], cloud=profile)
    assert "network 'no-such-net' does not exist" in out, out
    out = call_fails(salt_call, "ami_cinder.show", str(uuid.uuid4()), cloud=profile)
    assert "no volume with id" in out, out
    assert requests_to(proxies["network"], "GET", "/v2.0/networks")
    assert requests_to(proxies["image"], "GET", "/v2/images")
    assert requests_to(proxies["compute"], "GET", "/flavors/detail")
    assert [e for e in proxies["block-storage"].log if "/volumes/" in e["path"]]
    # and nothing was booted
    assert not [e for p in proxies.values() for e in p.log if e["method"] == "POST"]


def test_clients_negotiate_once_per_session(cloud_profile, demo_session):
    """Version discovery costs a document per service for the Clients' whole life, and no
    token of its own."""
    with fronted(demo_session, cloud_profile, "compute", "block-storage", "identity") as (profile, proxies):
        clients = auth.connect(profile=profile)
        for _ in range(3):
            nova.find_flavor(clients, "localcloud.small")
            cinder.list_volumes(clients)
        assert clients.microversion("compute") >= (2, 95) and clients.microversion("block-storage") >= (3, 70)
    discovery = [e for service_type in ("compute", "block-storage") for e in proxies[service_type].log
                 if not e["microversion"]]
    assert len(requests_to(proxies["compute"], "GET", "/v2.1")) == 1
    assert len(discovery) <= 4, discovery
    assert len(requests_to(proxies["identity"], "POST", "/auth/tokens")) == 1

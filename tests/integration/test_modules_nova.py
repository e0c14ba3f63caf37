"""ami_nova through a real salt-minion against the local cloud, as the non-admin user."""
import json
import time
import uuid
from pathlib import Path

import pytest
from novaclient import client as nova_client

USER_DATA = "#!/bin/sh\necho ami-nova-test-ran\n"


@pytest.fixture(scope="module")
def nova(demo_session):
    return nova_client.Client("2.96", session=demo_session)


def server_names(nova):
    return sorted(s.name for s in nova.servers.list())


def call_ok(salt_call, *args, **kwargs):
    ret = salt_call.run(*args, **kwargs)
    assert ret.returncode == 0, ret
    return ret.data


def call_fails(salt_call, *args, **kwargs):
    ret = salt_call.run(*args, **kwargs)
    assert ret.returncode != 0, ret
    return ret.stdout + ret.stderr


@pytest.fixture(scope="module")
def server(salt_master, salt_call, base_image, nova):
    """One server booted through ami_nova.boot (by image name, with user-data from the
    master's file server), shared by this module."""
    name = f"ami-nova-{uuid.uuid4().hex[:8]}"
    with salt_master.state_tree.base.temp_file("ami-test/user-data.sh", USER_DATA):
        data = call_ok(salt_call, "ami_nova.boot", name, base_image["name"], "localcloud.small",
                       user_data="salt://ami-test/user-data.sh", metadata={"purpose": "test"})
    try:
        yield data
    finally:
        nova_client_servers = [s for s in nova.servers.list() if s.name == name]
        for s in nova_client_servers:
            s.delete()


def test_boot_returns_an_active_server_with_its_metadata(server, base_image):
    assert server["status"] == "ACTIVE"
    assert server["image"]["id"] == base_image["id"]
    assert server["metadata"] == {"purpose": "test"}


def test_console_shows_what_user_data_printed(salt_call, server):
    deadline = time.monotonic() + 60
    while "ami-nova-test-ran" not in call_ok(salt_call, "ami_nova.console", server["id"]):
        assert time.monotonic() < deadline, "user-data output never reached the console"
        time.sleep(1)


def test_show_by_name(salt_call, server):
    assert call_ok(salt_call, "ami_nova.show", server["name"])["id"] == server["id"]


def test_wait_timeout_says_what_it_waited_for(salt_call, server):
    out = call_fails(salt_call, "ami_nova.wait", server["id"], status="SHUTOFF", timeout=1)
    assert f"timed out after 1s waiting for server {server['id']} to become SHUTOFF" in out
    assert "status ACTIVE" in out


@pytest.mark.parametrize("kwargs,message", [
    ({"image": "no-such-image"}, "no-such-image"),
    ({"flavor": "no.such.flavor"}, "flavor 'no.such.flavor' does not exist (flavors: localcloud.medium"),
    ({"networks": ["no-such-net"]}, "network 'no-such-net' does not exist"),
    ({"key_name": "no-such-key"}, "key pair 'no-such-key' does not exist"),
    ({"security_groups": ["no-such-group"]}, "security groups ['no-such-group'] do not exist"),
    ({"user_data": "x" * 60000}, "nova accepts at most 65535 bytes"),
    ({"volume_size": 0}, "volume_size 0: must be a whole number of GiB, at least 1"),
])
def test_bad_arguments_fail_before_anything_is_created(salt_call, nova, base_image, kwargs, message):
    # the servers of this name only: the other test process boots servers meanwhile
    args = {"image": base_image["id"], "flavor": "localcloud.small"}
    args.update(kwargs)
    out = call_fails(salt_call, "ami_nova.boot", "must-not-exist", args.pop("image"), args.pop("flavor"),
                     **args)
    assert message in out
    assert "must-not-exist" not in server_names(nova)


def test_api_errors_come_with_the_service_message(salt_call, nova, base_image):
    # only nova knows its availability zones: its own refusal must come through
    out = call_fails(salt_call, "ami_nova.boot", "nowhere", base_image["id"], "localcloud.small",
                     availability_zone="nowhere")
    assert "nova: boot 'nowhere': The requested availability zone is not available (HTTP 400)" in out
    assert "nowhere" not in server_names(nova)


def test_stop_then_delete_waits_until_gone(salt_call, base_image, nova):
    name = f"ami-nova-del-{uuid.uuid4().hex[:8]}"
    server = call_ok(salt_call, "ami_nova.boot", name, base_image["id"], "localcloud.small")
    assert call_ok(salt_call, "ami_nova.stop", server["id"])["status"] == "SHUTOFF"
    assert call_ok(salt_call, "ami_nova.delete", server["id"]) is True
    assert name not in server_names(nova)
    assert call_ok(salt_call, "ami_nova.delete", server["id"]) is False


def test_boot_from_volume_with_size(salt_call, base_image, nova, demo_session):
    from cinderclient import client as cinder_client
    cinder = cinder_client.Client("3.71", session=demo_session)
    volumes_before = {v.id for v in cinder.volumes.list()}
    name = f"ami-nova-bfv-{uuid.uuid4().hex[:8]}"
    server = call_ok(salt_call, "ami_nova.boot", name, base_image["id"], "localcloud.small", volume_size=2)
    try:
        attached = server["os-extended-volumes:volumes_attached"]
        assert len(attached) == 1
        assert cinder.volumes.get(attached[0]["id"]).size == 2
    finally:
        call_ok(salt_call, "ami_nova.delete", server["id"])
    deadline = time.monotonic() + 60
    while {v.id for v in cinder.volumes.list()} != volumes_before:
        assert time.monotonic() < deadline, "the boot volume outlived its server"
        time.sleep(1)


def test_attach_detach_volume_both_sides_agree(salt_call, server, demo_session):
    from cinderclient import client as cinder_client
    cinder = cinder_client.Client("3.71", session=demo_session)
    vol = cinder.volumes.create(1, name="ami-nova-attach")
    try:
        while cinder.volumes.get(vol.id).status != "available":
            time.sleep(0.5)
        att = call_ok(salt_call, "ami_nova.attach_volume", server["id"], vol.id)
        assert att["volume"] == vol.id
        assert cinder.volumes.get(vol.id).status == "in-use"
        out = call_fails(salt_call, "ami_nova.attach_volume", server["id"], vol.id)
        assert "only an available volume can be attached" in out
        call_ok(salt_call, "ami_nova.detach_volume", server["id"], vol.id)
        assert cinder.volumes.get(vol.id).status == "available"
    finally:
        cinder.volumes.delete(vol.id)


def test_snapshot_waits_for_an_active_image(salt_call, server, demo_session):
    from glanceclient import client as glance_client
    glance = glance_client.Client("2", session=demo_session)
    image = call_ok(salt_call, "ami_nova.snapshot", server["id"], f"{server['name']}-snap",
                    metadata={"ami_test": "1"})
    try:
        assert image["status"] == "active"
        got = glance.images.get(image["id"])
        assert got["ami_test"] == "1" and got["image_type"] == "snapshot"
        assert got["base_image_ref"] == server["image"]["id"]
    finally:
        glance.images.delete(image["id"])


def test_no_secret_in_returns_or_logs(salt_call, salt_minion, salt_master, server, localcloud):
    password = localcloud.clouds["localcloud"]["auth"]["password"]
    ret = salt_call.run("ami_nova.show", server["id"], "--log-level=debug")
    assert password not in json.dumps(ret.data) + ret.stdout + ret.stderr
    for daemon in (salt_minion, salt_master):
        log_file = Path(daemon.config["log_file"])
        assert log_file.exists() and password not in log_file.read_text(errors="replace")

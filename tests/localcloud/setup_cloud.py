"""Keystone catalog and cloud resources of the local cloud; runs in the services' venv.

    setup_cloud.py --catalog    projects, users, roles, services and endpoints (one process:
                                forty `openstack` CLI calls take minutes)
    setup_cloud.py --resources  wait until compute and volume services report up, then
                                the flavors (made or completed: it may run again on a
                                running cloud)
"""
import json
import os
import sys
import time

from cinderclient import client as cinder_client
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client
from novaclient import client as nova_client

AUTH_URL = "http://127.0.0.1:5000/v3"
SECRETS = json.loads(open(os.environ["LOCALCLOUD_SECRETS"]).read())
SERVICE_USERS = ("glance", "nova", "placement", "cinder", "neutron")
ENDPOINTS = [("keystone", "identity", AUTH_URL),
             ("glance", "image", "http://127.0.0.1:9292"),
             ("nova", "compute", "http://127.0.0.1:8774/v2.1"),
             ("placement", "placement", "http://127.0.0.1:8778"),
             ("cinderv3", "volumev3", "http://127.0.0.1:8776/v3/$(project_id)s"),
             ("cinder", "block-storage", "http://127.0.0.1:8776/v3/$(project_id)s"),
             ("neutron", "network", "http://127.0.0.1:9696")]
# (name, RAM MiB, vCPUs, root GiB, extra specs); localcloud.vm's instances are qemu VMs
# (drivers/nova_qemu.py), the others chroots. localcloud.vm's disk is the guest image's size:
# a guest under TCG zero-fills its free space at a build's scrub, at about 60 MiB/s; one vCPU:
# on a 2-core machine a TCG guest's second vCPU thread takes the core the other test process
# and the services run on, and a boot gains little from it
FLAVORS = [("localcloud.tiny", 256, 1, 2, {}), ("localcloud.small", 512, 1, 4, {}),
           ("localcloud.medium", 1024, 2, 8, {}), ("localcloud.vm", 1024, 1, 2, {"localcloud:vm": "true"})]


def admin_session():
    return ks_session.Session(auth=v3.Password(
        auth_url=AUTH_URL, username="admin", password=SECRETS["admin"], project_name="admin",
        user_domain_id="default", project_domain_id="default"))


def get_or_create(manager, name, **kw):
    return next(iter(manager.list(name=name)), None) or manager.create(name=name, **kw)


def catalog():
    ks = ks_client.Client(session=admin_session())
    service = get_or_create(ks.projects, "service", domain="default")
    demo = get_or_create(ks.projects, "demo", domain="default", description="the non-admin project")
    roles = {r.name: r for r in ks.roles.list()}
    for r in {"admin", "member", "reader", "service"} - set(roles):
        roles[r] = ks.roles.create(r)
    demo_user = get_or_create(ks.users, "demo", password=SECRETS["demo"], domain="default")
    ks.roles.grant(roles["member"], user=demo_user, project=demo)
    ks.roles.grant(roles["reader"], user=demo_user, project=demo)
    for name in SERVICE_USERS:
        user = get_or_create(ks.users, name, password=SECRETS["service"], domain="default")
        for r in ("admin", "service"):
            ks.roles.grant(roles[r], user=user, project=service)
    for name, stype, url in ENDPOINTS:
        svc = next((s for s in ks.services.list() if s.type == stype), None) or \
            ks.services.create(name=name, type=stype)
        have = {e.interface for e in ks.endpoints.list(service=svc)}
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                ks.endpoints.create(service=svc, url=url, interface=interface, region="RegionOne")


def resources(timeout=120):
    sess = admin_session()
    nova = nova_client.Client("2.96", session=sess)
    cinder = cinder_client.Client("3.0", session=sess)
    wanted = {"nova-compute", "nova-conductor", "nova-scheduler", "cinder-volume", "cinder-scheduler"}
    end = time.monotonic() + timeout
    while True:
        try:
            up = {s.binary for s in nova.services.list() + cinder.services.list() if s.state == "up"}
            if wanted <= up and nova.hypervisors.list():
                break
        except Exception as e:  # the APIs may still be warming up
            up = {f"error: {e}"}
        if time.monotonic() > end:
            sys.exit(f"services not up after {timeout}s: have {sorted(up)}, want {sorted(wanted)}")
        time.sleep(1)
    have = {f.name: f for f in nova.flavors.list(is_public=None)}
    for name, ram, vcpus, disk, specs in FLAVORS:
        flavor = have.get(name) or nova.flavors.create(name, ram=ram, vcpus=vcpus, disk=disk)
        if specs and flavor.get_keys() != specs:
            flavor.set_keys(specs)


if __name__ == "__main__":
    if "--catalog" in sys.argv:
        catalog()
    if "--resources" in sys.argv:
        resources()

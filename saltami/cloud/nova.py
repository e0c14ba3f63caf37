"""Servers: boot, wait, stop, delete, console, createImage, volume attach and detach."""
import base64
import logging
import re

from ..errors import InvalidArgument, NotFound, ResourceFailed
from . import cinder, glance
from .api import create_once, get_or_none, service_errors
from .wait import wait_for

log = logging.getLogger(__name__)

USER_DATA_MAX = 65535        # nova's limit on the base64 of user_data
METADATA_ITEM_MAX = 255
GONE = None                  # what fetch() returns for a deleted resource


# ------------------------------------------------------------------------------- lookups
def find_flavor(clients, ref):
    with service_errors("nova: list flavors"):
        flavors = clients.nova.flavors.list(is_public=None)
    for f in flavors:
        if ref in (f.id, f.name):
            return f
    names = ", ".join(sorted(f.name for f in flavors))
    raise NotFound(f"flavor {ref!r} does not exist (flavors: {names})")


def _network_api(clients, path):
    # the cloud's region and interface, as for every service: another region's neutron
    # knows other networks
    with service_errors("neutron"):
        return clients.network.get(path).json()


def find_network(clients, ref):
    nets = _network_api(clients, "/v2.0/networks")["networks"]
    match = [n for n in nets if ref in (n["id"], n["name"])]
    if len(match) != 1:
        names = ", ".join(sorted(n["name"] for n in nets)) or "none"
        what = "is ambiguous" if match else "does not exist"
        raise NotFound(f"network {ref!r} {what} (networks: {names})")
    return match[0]


def _nics(clients, networks):
    """nova's nics argument from: None/'none' (no network), 'auto', or a list of network
    names or ids, or dicts with net-id, port-id, fixed_ip (nova's own keys)."""
    if networks in (None, "none", "auto"):
        clients.require("boot-networks")
        return networks or "none"
    if isinstance(networks, str):
        networks = [networks]
    if not isinstance(networks, (list, tuple)):
        raise InvalidArgument(f"networks must be 'none', 'auto' or a list of networks, not {networks!r}")
    nics = []
    for n in networks:
        if isinstance(n, dict):
            unknown = set(n) - {"net-id", "port-id", "v4-fixed-ip", "v6-fixed-ip", "tag"}
            if unknown:
                raise InvalidArgument(f"network entry {n!r}: unknown keys {sorted(unknown)} "
                                      "(allowed: net-id, port-id, v4-fixed-ip, v6-fixed-ip, tag)")
            if "tag" in n:
                clients.require("nic-tags")
            if "net-id" in n:
                n = dict(n, **{"net-id": find_network(clients, n["net-id"])["id"]})
            nics.append(n)
        else:
            nics.append({"net-id": find_network(clients, n)["id"]})
    return nics


def _check_security_groups(clients, groups):
    if not groups:
        return None
    if isinstance(groups, str):
        groups = [groups]
    have = _network_api(clients, "/v2.0/security-groups")["security_groups"]
    known = {g["name"] for g in have} | {g["id"] for g in have}
    missing = [g for g in groups if g not in known]
    if missing:
        raise NotFound(f"security groups {missing} do not exist "
                       f"(security groups: {', '.join(sorted({g['name'] for g in have}))})")
    return list(groups)


def _check_keypair(clients, key_name):
    if key_name is None:
        return
    with service_errors("nova: list key pairs"):
        names = [k.name for k in clients.nova.keypairs.list()]
    if key_name not in names:
        raise NotFound(f"key pair {key_name!r} does not exist (key pairs: {', '.join(sorted(names)) or 'none'})")


def _check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidArgument(f"metadata must be a mapping of strings, not {metadata!r}")
    out = {}
    for k, v in metadata.items():
        k, v = str(k), str(v)
        if not k or len(k) > METADATA_ITEM_MAX or len(v) > METADATA_ITEM_MAX:
            raise InvalidArgument(f"metadata item {k[:40]!r}: keys must be 1-255 and values "
                                  "0-255 characters")
        out[k] = v
    return out


def _user_data_bytes(user_data):
    if user_data is None:
        return None
    data = user_data.encode() if isinstance(user_data, str) else user_data
    if not isinstance(data, bytes):
        raise InvalidArgument(f"user_data must be text, not {type(user_data).__name__}")
    if len(base64.b64encode(data)) > USER_DATA_MAX:
        raise InvalidArgument(f"user_data is {len(data)} bytes; nova accepts at most {USER_DATA_MAX} "
                              "bytes once base64-encoded (about 48 KiB)")
    return data


def check_boot(clients, flavor, networks=None, key_name=None, security_groups=None):
    """(flavor, nics, security groups) for boot, or NotFound naming what the cloud lacks:
    a build asks before it makes anything."""
    flv = find_flavor(clients, flavor)
    nics = _nics(clients, networks)
    _check_keypair(clients, key_name)
    return flv, nics, _check_security_groups(clients, security_groups)


# ------------------------------------------------------------------------------- servers
def server_dict(server):
    s = server.to_dict()
    keep = ("id", "name", "status", "created", "updated", "metadata", "key_name", "config_drive",
            "addresses", "image", "flavor", "fault", "OS-EXT-STS:task_state", "OS-EXT-STS:power_state",
            "os-extended-volumes:volumes_attached", "tenant_id", "user_id")
    return {k: s[k] for k in keep if k in s}


def _get_server(clients, server_id):
    return get_or_none(f"nova: show server {server_id}", lambda: clients.nova.servers.get(server_id))


def _fault(server):
    fault = getattr(server, "fault", None) or {}
    return fault.get("message") or "no fault message"


def _servers_named(clients, name):
    # nova's name filter is a regular expression
    with service_errors("nova: list servers"):
        return [s for s in clients.nova.servers.list(search_opts={"name": f"^{re.escape(name)}$"})
                if s.name == name]


def find_server(clients, ref):
    server = _get_server(clients, ref)
    if server is GONE:
        match = _servers_named(clients, ref)
        if len(match) != 1:
            raise NotFound(f"server {ref!r} {'is ambiguous' if match else 'does not exist'}")
        server = match[0]
    return server


def wait_status(clients, server_id, status="ACTIVE", timeout=600):
    """Wait until the server has ``status``; an ERROR raises with the server's fault."""
    server = wait_for(
        lambda: _get_server(clients, server_id),
        done=lambda s: s is not GONE and s.status == status,
        failed=lambda s: ("server was deleted" if s is GONE else
                          f"server went to ERROR: {_fault(s)}" if s.status == "ERROR" else None),
        describe=lambda s: ("gone" if s is GONE else
                            f"status {s.status}, task {getattr(s, 'OS-EXT-STS:task_state', None)}"),
        what=f"server {server_id} to become {status}", timeout=timeout)
    return server_dict(server)


def boot(clients, name, image=None, flavor=None, networks=None, key_name=None, security_groups=None,
         user_data=None, config_drive=None, metadata=None, volume_size=None, availability_zone=None,
         wait=True, timeout=600, delete_on_failure=True):
    """Boot a server; every argument is checked before the server is created.

    ``image`` is an id, a name or a property filter (see glance.find_image). With
    ``volume_size`` (GiB) the server boots from a new volume made from the image, deleted
    with the server. With ``wait``, a server that goes to ERROR or times out is deleted
    (unless ``delete_on_failure`` is False) and the error carries nova's fault message.
    """
    if not name or not isinstance(name, str):
        raise InvalidArgument(f"server name must be a non-empty string, not {name!r}")
    if image is None or flavor is None:
        raise InvalidArgument("boot needs an image and a flavor")
    img = glance.find_image(clients, image)
    flv, nics, groups = check_boot(clients, flavor, networks, key_name, security_groups)
    meta = _check_metadata(metadata)
    data = _user_data_bytes(user_data)
    kw = {"nics": nics, "key_name": key_name, "meta": meta, "userdata": data,
          "config_drive": config_drive, "availability_zone": availability_zone}
    if groups:
        kw["security_groups"] = groups
    boot_image = img["id"]
    if volume_size is not None:
        # the disk the image describes, not the bytes Glance stores (a qcow2 is smaller)
        need = cinder.min_gib(img)
        if isinstance(volume_size, bool) or not isinstance(volume_size, int) or volume_size < max(need, 1):
            raise InvalidArgument(f"volume_size {volume_size!r}: must be a whole number of GiB, at "
                                  f"least {max(need, 1)} for image {img['name']!r}")
        kw["block_device_mapping_v2"] = [{
            "boot_index": 0, "uuid": img["id"], "source_type": "image", "destination_type": "volume",
            "volume_size": volume_size, "delete_on_termination": True}]
        boot_image = None
    before = {s.id for s in _servers_named(clients, name)}
    server = create_once(
        f"nova: boot {name!r}", lambda: clients.nova.servers.create(name, boot_image, flv.id, **kw),
        lambda: [s for s in _servers_named(clients, name)
                 if s.id not in before and meta.items() <= (s.metadata or {}).items()])
    log.info("booting server %s (%s) from image %s, flavor %s", name, server.id, img["id"], flv.name)
    if not wait:
        return server_dict(server)
    try:
        return wait_status(clients, server.id, "ACTIVE", timeout)
    except Exception:
        if delete_on_failure:
            delete(clients, server.id, wait=True, timeout=timeout)
        raise


def stop(clients, server_id, wait=True, timeout=300):
    server = find_server(clients, server_id)
    if server.status != "SHUTOFF":
        with service_errors(f"nova: stop {server.id}"):
            server.stop()
    return wait_status(clients, server.id, "SHUTOFF", timeout) if wait else server_dict(server)


DELETE_RETRIES = 3


def delete(clients, server_id, wait=True, timeout=300):
    """Delete a server and, with ``wait``, wait until it is gone; False when there was none."""
    server = _get_server(clients, server_id)
    if server is GONE:
        return False
    # a 404 is no failure: the server went meanwhile, or this was a delete repeated after
    # its answer was lost
    get_or_none(f"nova: delete {server_id}", server.delete)
    if wait:
        wait_deleted(clients, server_id, timeout)
    log.info("%s server %s", "deleted" if wait else "deleting", server_id)
    return True


def wait_deleted(clients, server_id, timeout=300):
    """Until a server whose deletion was asked for is gone."""
    retries = [DELETE_RETRIES]

    def failed(s):
        if s.status != "ERROR" or getattr(s, "OS-EXT-STS:task_state", None):
            return None
        # a server deleted while it was building can land in ERROR ("build aborted")
        # before its delete goes through: deleting it again is what nova expects
        if retries[0]:
            retries[0] -= 1
            # a 404: the first delete went through meanwhile, which the next poll sees
            get_or_none(f"nova: delete {server_id} again", s.delete)
            return None
        return f"delete failed: {_fault(s)}"

    wait_for(lambda: _get_server(clients, server_id), done=lambda s: s is GONE, failed=failed,
             describe=lambda s: f"status {s.status}", what=f"server {server_id} to be deleted",
             timeout=timeout)


def console_output(clients, server_id, length=None):
    server = find_server(clients, server_id)
    with service_errors(f"nova: console of {server.id}"):
        return server.get_console_output(length=length)


def wait_task_done(clients, server_id, timeout=600):
    """Wait until nova runs no task on the server (its task_state is None). A snapshot's image
    is active before nova has ended the snapshot task, and a server deleted in between makes
    that task fail, whereupon nova deletes the image (its delete_image_on_error)."""
    wait_for(lambda: _get_server(clients, server_id),
             done=lambda s: s is not GONE and not getattr(s, "OS-EXT-STS:task_state", None),
             failed=lambda s: "server was deleted" if s is GONE else None,
             describe=lambda s: "gone" if s is GONE else f"task {getattr(s, 'OS-EXT-STS:task_state', None)}",
             what=f"nova to end its task on server {server_id}", timeout=timeout)


def create_snapshot(clients, server_id, name, metadata=None, wait=True, timeout=1800):
    """createImage of a server; with ``wait``, until the Glance image is active and nova has
    ended the snapshot task (wait_task_done). An image that ends killed or vanishes (nova
    deletes it when the snapshot fails) raises."""
    server = find_server(clients, server_id)
    meta = _check_metadata(metadata)

    def snapshots():
        # nova names the server in the snapshot's instance_uuid
        return [i["id"] for i in glance.find_images(clients, name=name, properties={"instance_uuid": server.id},
                                                    active_only=False)]

    before = set(snapshots())
    image_id = create_once(f"nova: createImage of {server.id}",
                           lambda: clients.nova.servers.create_image(server, name, metadata=meta),
                           lambda: [i for i in snapshots() if i not in before])
    log.info("snapshot %s (%s) of server %s started", name, image_id, server.id)
    if not wait:
        return {"id": image_id, "name": name}
    try:
        image = glance.wait_active(clients, image_id, timeout=timeout)
        wait_task_done(clients, server.id, timeout=timeout)
        return image
    except ResourceFailed as e:
        fault = _get_server(clients, server.id)
        reason = f"; server fault: {_fault(fault)}" if fault is not GONE and getattr(fault, "fault", None) else ""
        raise ResourceFailed(f"snapshot of server {server.id}: {e}{reason}") from None


# ------------------------------------------------------------------------------- volumes
def _server_volumes(clients, server_id):
    with service_errors("nova: list volume attachments"):
        return clients.nova.volumes.get_server_volumes(server_id)


def _attached(clients, server_id, volume_id):
    return any(a.volumeId == volume_id for a in _server_volumes(clients, server_id))


def _wait_attachment(clients, server_id, volume_id, attach, failed, timeout):
    """Until cinder's status and nova's attachment list both say the volume is attached
    (``attach``) or detached."""
    want = "in-use" if attach else "available"
    wait_for(lambda: (cinder.show(clients, volume_id)["status"], _attached(clients, server_id, volume_id)),
             done=lambda st: st == (want, attach),
             failed=lambda st: failed(st[0]),
             describe=lambda st: f"volume {st[0]}, nova attachment {'listed' if st[1] else 'absent'}",
             what=f"volume {volume_id} to {'attach to' if attach else 'detach from'} server {server_id}",
             timeout=timeout)


def attach_volume(clients, server_id, volume_id, wait=True, timeout=300):
    """Attach and wait until nova lists the attachment and cinder says in-use."""
    server = find_server(clients, server_id)
    status = cinder.show(clients, volume_id)["status"]
    if status != "available":
        raise InvalidArgument(f"volume {volume_id} is {status}; only an available volume can be attached")
    # the volume was available: an attachment of it listed now is this call's
    att = create_once(f"nova: attach {volume_id} to {server.id}",
                      lambda: clients.nova.volumes.create_server_volume(server.id, volume_id),
                      lambda: [a for a in _server_volumes(clients, server.id) if a.volumeId == volume_id])
    if wait:
        _wait_attachment(clients, server.id, volume_id, True,
                         lambda status: _attach_failure(clients, server.id, status), timeout)
    return {"server": server.id, "volume": volume_id, "device": getattr(att, "device", None)}


def _attach_failure(clients, server_id, volume_status):
    if volume_status.startswith("error"):
        return f"volume went to {volume_status}"
    # the API reserved the volume before answering, so "available" again means nova rolled
    # a failed attach back; its reason is in the server's instance action events
    if volume_status == "available":
        with service_errors("nova: instance actions"):
            actions = [a for a in clients.nova.instance_action.list(server_id) if a.action == "attach_volume"]
            # a non-admin sees an action's events from microversion 2.51 on
            events = (getattr(clients.nova.instance_action.get(server_id, actions[0].request_id), "events", [])
                      if actions and clients.supports("action-events") else [])
        details = "; ".join(f"{e['event']}: {e.get('result')}" for e in events) or "no details from nova"
        return f"nova rolled the attach back ({details})"
    return None


def detach_volume(clients, server_id, volume_id, wait=True, timeout=300):
    """Detach and wait until nova no longer lists it and cinder says available."""
    server = find_server(clients, server_id)
    if not _attached(clients, server.id, volume_id):
        raise InvalidArgument(f"volume {volume_id} is not attached to server {server.id}")
    with service_errors(f"nova: detach {volume_id} from {server.id}"):
        clients.nova.volumes.delete_server_volume(server.id, volume_id)
    if wait:
        _wait_attachment(clients, server.id, volume_id, False,
                         lambda status: f"volume went to {status}" if status.startswith("error") else None, timeout)
    return {"server": server.id, "volume": volume_id, "detached": True}


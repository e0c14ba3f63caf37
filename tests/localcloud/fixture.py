"""The pytest side of the local cloud: bring it up or reuse a running one, upload the base
test image once, and hand out keystoneauth sessions for the non-admin user and for admin."""
import fcntl
import os
import subprocess

import yaml
from glanceclient import client as glance_client
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from . import RUN_ENV, baseimage, cli

BASE_IMAGE_NAME = "localcloud-debian12-salt"


class LocalCloud:
    """A running local cloud, seen from the tests."""

    def __init__(self):
        self.home = cli.HOME
        self.clouds_yaml = cli.CLOUDS_YAML
        self.clouds = yaml.safe_load(self.clouds_yaml.read_text())["clouds"]
        self._sessions = {}
        self._base = None

    def session(self, admin=False):
        name = "localcloud-admin" if admin else "localcloud"
        if name not in self._sessions:
            a = self.clouds[name]["auth"]
            self._sessions[name] = ks_session.Session(auth=v3.Password(
                auth_url=a["auth_url"], username=a["username"], password=a["password"],
                project_name=a["project_name"], user_domain_name=a["user_domain_name"],
                project_domain_name=a["project_domain_name"]))
        return self._sessions[name]

    @property
    def instances_path(self):
        return cli.INSTANCES

    def guest_image(self, name):
        """The real guests' base image (guestimage.py) in Glance, public, uploaded by admin
        once per cloud; {id, name, path}."""
        from . import guestimage

        path = guestimage.ensure_guest_image(self.home)
        return self._uploaded(name, path, "qcow2", path.stem.split("-")[-1])

    def _uploaded(self, name, path, disk_format, key):
        # one upload for the pytest processes of a run that ask at once (xdist's workers)
        with open(self.home / "upload.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._upload_once(name, path, disk_format, key)

    def _upload_once(self, name, path, disk_format, key):
        glance = glance_client.Client("2", session=self.session(admin=True))
        found = [i for i in glance.images.list(filters={"name": name})
                 if i.get("localcloud_base_key") == key and i["status"] == "active"
                 and i["disk_format"] == disk_format]
        if found:
            image = found[0]
        else:
            image = glance.images.create(
                name=name, disk_format=disk_format, container_format="bare", visibility="public",
                os_distro="debian", os_version="12", localcloud_base_key=key)
            with open(path, "rb") as f:
                glance.images.upload(image["id"], f, image_size=path.stat().st_size)
            image = glance.images.get(image["id"])
        return {"id": image["id"], "name": image["name"], "path": path, "size": image["size"],
                "checksum": image["os_hash_value"]}

    def base_image(self):
        """The base test image in Glance (public, uploaded by admin), built and cached on
        disk once per machine and uploaded once per cloud: as qcow2, as most clouds keep
        their images (snapshots of its servers are qcow2 too, half the bytes of the raw
        disk); ``path`` is the raw disk."""
        if self._base is None:
            path = baseimage.ensure_base_image()
            key = path.stem.split("-")[-1]
            self._base = {**self._uploaded(BASE_IMAGE_NAME, baseimage.as_qcow2(path), "qcow2", key), "path": path}
        return self._base


def is_up():
    return subprocess.run([str(cli.HERE / "localcloud"), "status"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def start():
    """Reuse a running cloud, or bring one up for this test run (RUN_ENV: xdist's workers start
    it where they first need it, and the run ends it once, in ``stop_if_started_here``);
    returns a LocalCloud."""
    if is_up() and cli.CLOUDS_YAML.exists():
        return LocalCloud()
    subprocess.run([str(cli.HERE / "localcloud"), "up"], check=True)
    STARTED_BY.write_text(os.environ[RUN_ENV])
    return LocalCloud()


# which test run brought the cloud up: that run takes it down at its end, another reuses it
STARTED_BY = cli.HOME / "started-by-run"


def stop_if_started_here():
    """Take the cloud down if this test run brought it up (LOCALCLOUD_KEEP=1 keeps it)."""
    try:
        started_by = STARTED_BY.read_text()
    except FileNotFoundError:
        return
    if started_by == os.environ.get(RUN_ENV) and os.environ.get("LOCALCLOUD_KEEP") != "1":
        subprocess.run([str(cli.HERE / "localcloud"), "down"], check=True)
        STARTED_BY.unlink(missing_ok=True)

"""TEST-ONLY nova virt driver: the chroot driver (nova_chroot.py), whose instances can also be
real virtual machines. `compute_driver = nova_qemu.QemuDriver`; nova imports drivers only
from nova/virt/, where `localcloud up` links this file and nova_chroot.py.

An instance whose flavor has the extra spec ``localcloud:vm=true`` (the flavor
``localcloud.vm``) runs under qemu (qemu_vm.py beside this file), as on a KVM cloud:

- its disk is a qcow2 overlay, of the flavor's root size, on a raw copy of the Glance image
  (nova's libvirt driver with its default ``force_raw_images``), booted as the image boots
  itself (GRUB in its MBR), or for an AMI-style image (kernel_id, ramdisk_id) from its kernel
  and ramdisk with its os_command_line; a server booted from a volume boots from the
  volume's file;
- its config drive is nova's own ISO 9660 drive, read by the guest's real cloud-init. The
  one NIC is on qemu's user-mode network (DHCP, 10.0.2.15; the host's loopback services at
  10.0.2.2), whatever ports neutron holds for the server, so the drive's network_data.json
  describes that NIC as a DHCP link on the server's first port's MAC address;
- the serial console is the console log (``nova console-log``);
- a volume attached to a running server is hot-plugged as a virtio disk whose serial is the
  volume id, and detaching it asks the guest to let go (ACPI) before it is removed;
- stop is an ACPI power-off, then a hard stop once nova's shutdown timeout passes; a
  snapshot uploads the disk's bytes as qcow2 (paused meanwhile if the server runs), as the
  libvirt driver does with its qcow2 image backend;
- discard is ignored (nova's ``hw_disk_discard`` unset) unless the flavor's extra spec
  ``localcloud:disk_discard`` is ``unmap``.

The guest's SSH port is forwarded to a port of the host's 127.0.0.1, recorded in the
instance's state.json (``ssh_port``) and printed on its console, for tests that log in.
Every other instance is a chroot, exactly as nova_chroot.py describes.
"""
import importlib.util
import os
import random
import time

from oslo_config import cfg
from oslo_log import log as logging

from nova import exception
from nova.api.metadata import base as instance_metadata
from nova.compute import power_state
from nova.image import glance
from nova.virt import configdrive, fake, nova_chroot

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

_spec = importlib.util.spec_from_file_location(
    "localcloud_qemu_vm", os.path.join(os.path.dirname(nova_chroot.RUNNER), "qemu_vm.py"))
qemu_vm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qemu_vm)
faultfile = nova_chroot.faultfile

VM_SPEC = "localcloud:vm"
DISCARD_SPEC = "localcloud:disk_discard"
ROOT = nova_chroot.ROOT
CONFIG_DRIVE = nova_chroot.CONFIG_DRIVE
# what the probe for a working KVM decided, for this host: kept across `localcloud up`
ACCEL_CACHE = os.path.join(os.environ.get("LOCALCLOUD_HOME", "/var/lib/localcloud"), "cache",
                           "vm-accel.json")


def wants_vm(instance):
    return (instance.flavor.extra_specs or {}).get(VM_SPEC) == "true"


def _mac(network_info):
    for vif in network_info or ():
        if vif.get("address"):
            return vif["address"]
    return "fa:16:3e:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))


def _network_metadata(mac):
    """network_data.json for the VM's one NIC: a DHCP link, as nova describes a port on a
    subnet with DHCP."""
    return {"links": [{"id": "tap0", "vif_id": "localcloud-user-net", "type": "vif",
                       "ethernet_mac_address": mac, "mtu": 1500}],
            "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tap0",
                          "network_id": "localcloud-user-net"}],
            "services": []}


class QemuDriver(nova_chroot.ChrootDriver):
    """ChrootDriver whose instances of a ``localcloud:vm`` flavor are qemu VMs."""

    def _is_vm(self, instance):
        st = self._state(instance)
        return st.get("kind") == "vm" if st else wants_vm(instance)

    def _vm_dir(self, instance):
        return os.path.realpath(self._dir(instance))

    # ------------------------------------------------------------ creating the disks
    def _make_root_disk(self, context, instance, disk):
        if not wants_vm(instance):
            return super()._make_root_disk(context, instance, disk)
        base, fmt = self._cached_image(context, instance.image_ref)
        size = max(instance.flavor.root_gb << 30, os.path.getsize(base))
        nova_chroot._run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk["path"],
                         str(size))
        disk["format"] = "qcow2"
        return fmt

    def _create_disks(self, context, instance, block_device_info):
        super()._create_disks(context, instance, block_device_info)
        if not wants_vm(instance):
            return
        st = self._state(instance)
        discard = (instance.flavor.extra_specs or {}).get(DISCARD_SPEC, "ignore")
        if discard not in qemu_vm.DISCARD:
            raise nova_chroot.ChrootError("flavor extra spec %s=%r: allowed %s"
                                          % (DISCARD_SPEC, discard, ", ".join(qemu_vm.DISCARD)))
        for disk in st["disks"].values():
            disk["discard"] = discard
            disk.setdefault("format", "raw")  # volumes, and a root disk that is a volume
        st.update(kind="vm", mac=None, ssh_port=None, **self._direct_boot(context, instance))
        self._save(instance, st)

    def _direct_boot(self, context, instance):
        """An AMI-style image (kernel_id and ramdisk_id): its kernel and ramdisk fetched beside
        the disk and booted directly with the image's os_command_line, as the libvirt driver
        does (root=/dev/vda and the consoles without one)."""
        if not instance.kernel_id:
            return {}
        boot = {}
        for key, image_id in (("kernel", instance.kernel_id), ("initrd", instance.ramdisk_id)):
            if image_id:
                boot[key] = os.path.join(self._dir(instance), key)
                glance.API().download(context, image_id, dest_path=boot[key])
        boot["cmdline"] = instance.image_meta.properties.get("os_command_line") \
            or "root=/dev/vda console=tty0 console=ttyS0"
        return boot

    def _create_config_drive(self, instance, injected_files, admin_password, network_info):
        if not wants_vm(instance):
            return super()._create_config_drive(instance, injected_files, admin_password, network_info)
        st = self._state(instance)
        st["mac"] = _mac(network_info)
        md = instance_metadata.InstanceMetadata(
            instance, content=injected_files, network_info=network_info,
            network_metadata=_network_metadata(st["mac"]),
            extra_md={"admin_pass": admin_password} if admin_password else {})
        iso = os.path.join(self._dir(instance), "disk.config")
        # the guest reads ISO 9660 itself: nova's own drive, nothing else
        with configdrive.ConfigDriveBuilder(instance_md=md) as builder:
            builder.make_drive(iso)
        st["disks"][CONFIG_DRIVE] = {"path": iso, "format": "raw", "cdrom": True, "read_only": True,
                                     "label": nova_chroot.CONFIG_DRIVE_LABEL}
        self._save(instance, st)

    # ------------------------------------------------------------ running and stopping
    def _accel(self, instance):
        root = self._state(instance)["disks"][ROOT]["path"]
        accel, why = qemu_vm.accel(root, ACCEL_CACHE, self._dir(instance), log=LOG.info)
        return accel, why

    def _vm_spec(self, instance, st):
        accel, _why = self._accel(instance)
        # the root disk first (it boots), the config drive last
        order = [ROOT] + sorted(n for n in st["disks"] if n not in (ROOT, CONFIG_DRIVE))
        order += [CONFIG_DRIVE] if CONFIG_DRIVE in st["disks"] else []
        return {"name": instance.name, "accel": accel, "vcpus": instance.flavor.vcpus,
                "ram_mb": instance.flavor.memory_mb, "mac": st["mac"] or _mac(None),
                "ssh_port": st["ssh_port"], "disks": {n: st["disks"][n] for n in order},
                **{k: st[k] for k in ("kernel", "initrd", "cmdline") if st.get(k)}}

    def _boot(self, instance, first_boot):
        if not self._is_vm(instance):
            return super()._boot(instance, first_boot)
        st = self._state(instance)
        st["ssh_port"] = qemu_vm.free_port()  # a new one at each boot: the last may be taken
        self._save(instance, st)
        spec = self._vm_spec(instance, st)
        t0 = time.monotonic()
        pid = qemu_vm.start(self._vm_dir(instance), spec)
        self._log(instance, "vm started (pid %d, %s, %d vCPU, %d MiB) in %.1fs; ssh: 127.0.0.1:%d"
                  % (pid, spec["accel"], spec["vcpus"], spec["ram_mb"], time.monotonic() - t0,
                     st["ssh_port"]))

    def _deactivate(self, instance):
        if not self._is_vm(instance):
            return super()._deactivate(instance)
        if qemu_vm.running(self._vm_dir(instance)):
            qemu_vm.kill(self._vm_dir(instance))
            self._log(instance, "vm stopped (hard)")

    def _log(self, instance, msg):
        prefix = "localcloud-vm" if self._is_vm(instance) else "localcloud-chroot"
        with open(self._console(instance), "a") as f:
            f.write("[%s %s] %s\n" % (prefix, time.strftime("%H:%M:%S"), msg))

    def _power_state_of(self, directory, st):
        if st.get("kind") == "vm":
            return power_state.RUNNING if qemu_vm.running(os.path.realpath(directory)) \
                else power_state.SHUTDOWN
        return super()._power_state_of(directory, st)

    def get_info(self, instance, use_cache=True):
        # a guest that powered itself off is off: nova's power state sync then sees it
        if instance.uuid in self.instances and self._is_vm(instance):
            self.instances[instance.uuid].state = self._power_state_of(self._dir(instance),
                                                                       self._state(instance))
        return super().get_info(instance, use_cache)

    def power_off(self, instance, timeout=0, retry_interval=0):
        if not self._is_vm(instance):
            return super().power_off(instance, timeout, retry_interval)
        fake.FakeDriver.power_off(self, instance, timeout, retry_interval)
        t0 = time.monotonic()
        clean = qemu_vm.shutdown(self._vm_dir(instance), timeout, retry_interval)
        self._log(instance, "vm powered off in %.1fs (%s)" % (
            time.monotonic() - t0, "ACPI shutdown" if clean else
            "hard stop%s" % (" after %ds of ACPI shutdown" % timeout if timeout else "")))

    def reboot(self, context, instance, network_info, reboot_type, block_device_info=None,
               bad_volumes_callback=None, accel_info=None, share_info=None):
        if not self._is_vm(instance):
            return super().reboot(context, instance, network_info, reboot_type, block_device_info,
                                  bad_volumes_callback, accel_info, share_info)
        directory = self._vm_dir(instance)
        if reboot_type.lower() == "soft":
            qemu_vm.shutdown(directory, CONF.shutdown_timeout, CONF.compute.shutdown_retry_interval)
        else:
            qemu_vm.kill(directory)
        self._boot(instance, first_boot=False)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        if self._is_vm(instance) and self._state(instance):
            qemu_vm.kill(self._vm_dir(instance))
        return super().destroy(context, instance, network_info, block_device_info, destroy_disks,
                               destroy_secrets)

    # ------------------------------------------------------------ snapshots
    def snapshot(self, context, instance, image_id, update_task_state):
        if not self._is_vm(instance):
            return super().snapshot(context, instance, image_id, update_task_state)
        fault = faultfile.apply("nova.snapshot", instance.display_name)
        if fault and fault["action"] == "hang":
            faultfile.hang(lambda: nova_chroot._image_gone(context, image_id)
                           or nova_chroot._deleting(instance))
            raise nova_chroot.ChrootError("snapshot %s abandoned: its upload hung (injected fault)"
                                          % image_id)
        fake.FakeDriver.snapshot(self, context, instance, image_id, update_task_state)
        t0 = time.monotonic()
        directory = self._vm_dir(instance)
        root = self._state(instance)["disks"][ROOT]
        upload = os.path.join(directory, "snapshot")
        live = qemu_vm.running(directory)
        if live:
            qemu_vm.pause(directory)
        try:
            # flattened: the image holds the overlay and its base
            nova_chroot._run("qemu-img", "convert", "-U", "-f", root["format"], "-O", "qcow2",
                             root["path"], upload)
        finally:
            if live:
                qemu_vm.resume(directory)
        t_copy = time.monotonic() - t0
        try:
            with open(upload, "rb") as f:
                glance.API().update(context, image_id,
                                    {"disk_format": "qcow2", "container_format": "bare",
                                     "properties": {"localcloud_snapshot": "vm"}},
                                    f, purge_props=False)
        finally:
            os.unlink(upload)
        self._log(instance, "snapshot %s (qcow2%s) uploaded in %.1fs, of which copy %.1fs"
                  % (image_id, ", live" if live else "", time.monotonic() - t0, t_copy))

    # ------------------------------------------------------------ volumes
    def attach_volume(self, context, connection_info, instance, mountpoint, disk_bus=None,
                      device_type=None, encryption=None):
        if not self._is_vm(instance):
            return super().attach_volume(context, connection_info, instance, mountpoint, disk_bus,
                                         device_type, encryption)
        faultfile.apply("nova.attach", instance.display_name)
        fake.FakeDriver.attach_volume(self, context, connection_info, instance, mountpoint, disk_bus,
                                      device_type, encryption)
        name = nova_chroot._device_name(mountpoint)
        st = self._state(instance)
        disk = dict(nova_chroot._volume_disk(connection_info), format="raw",
                    discard=st["disks"][ROOT].get("discard", "ignore"))
        if qemu_vm.running(self._vm_dir(instance)):
            qemu_vm.plug(self._vm_dir(instance), name, disk)
        st["disks"][name] = disk
        self._save(instance, st)
        self._log(instance, "volume %s attached (virtio, serial %s)" % (disk["serial"], disk["serial"][:20]))

    def detach_volume(self, context, connection_info, instance, mountpoint, encryption=None):
        if not self._is_vm(instance):
            return super().detach_volume(context, connection_info, instance, mountpoint, encryption)
        name = nova_chroot._device_name(mountpoint)
        st = self._state(instance)
        if name in st["disks"] and qemu_vm.running(self._vm_dir(instance)):
            try:
                qemu_vm.unplug(self._vm_dir(instance), name)
            except qemu_vm.VMError as e:
                raise exception.DeviceDetachFailed(device=mountpoint, reason=str(e))
        st["disks"].pop(name, None)
        self._save(instance, st)
        fake.FakeDriver.detach_volume(self, context, connection_info, instance, mountpoint, encryption)
        self._log(instance, "volume detached from %s" % mountpoint)

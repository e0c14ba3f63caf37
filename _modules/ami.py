"""Build-level functions of salt-ami. From inside a builder VM: which server this is and
which local disk an attached volume is.

Thin over the ``saltami`` library.
"""
try:
    from saltami import saltglue
    from saltami.cloud import instance

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

__virtualname__ = "ami"


def __virtual__():
    if not HAS_LIBS:
        return False, f"ami needs the salt-ami library: {_MISSING}"
    return __virtualname__


def whoami(server_id=None, metadata_url=instance.METADATA_URL if HAS_LIBS else None, timeout=3):
    """
    The OpenStack server this minion runs in: from ``server_id`` if given, else the config
    drive (label config-2), else the metadata service.

    CLI Example:

    .. code-block:: bash

        salt-call ami.whoami
    """
    with saltglue.salt_errors():
        return instance.whoami(server_id=server_id, metadata_url=metadata_url, timeout=timeout)


def volume_device(volume, timeout=60):
    """
    The local block device of an attached volume, found by its serial under
    /dev/disk/by-id (virtio-<first 20 characters of the id>, or the virtio-scsi names).

    CLI Example:

    .. code-block:: bash

        salt-call ami.volume_device 0d3e5b6c-...
    """
    with saltglue.salt_errors():
        return instance.volume_device(volume, timeout=timeout)


def plan(ami_pillar, flavour=None, with_parents=True):
    """
    What an orchestrated build will do: for each flavour (or the one or the list given), a new build id,
    its steps in order, and the process that drives them (this one). Used by
    salt/formulas/ami/build.sls to lay out one state per step;
    validates the flavours first, so a bad flavour stops the orchestration before anything
    is created.

    Image families: the flavours come in the order they build, each after the flavour whose
    image it builds from (``from_parent``), which is its ``parent`` (else None); with
    ``with_parents`` (the default) those parents come in even when not asked for.

    CLI Example:

    .. code-block:: bash

        salt-call ami.plan "$(salt-call --out=json pillar.get ami)" flavour=debian-postgres
    """
    from saltami import flavour as flavour_lib
    from saltami import pipeline

    with saltglue.salt_errors():
        if flavour is None:
            names = flavour_lib.names(ami_pillar)
        else:
            names = [flavour] if isinstance(flavour, str) else list(flavour)
        # the process rendering the orchestration runs it: its steps record it as their owner
        owner = pipeline.claims.this_process()
        return [{"flavour": name, "parent": parent, "build": pipeline.new_id(name), "owner": owner,
                 "steps": [s.NAME for s in pipeline.steps_of_spec(flavour_lib.resolve(ami_pillar, name))]}
                for name, parent in flavour_lib.build_order(ami_pillar, names, with_parents)]


def _cloud_or_none(cloud):
    """The cloud's clients, or None when none is configured (the local provider then writes
    its outputs to a directory)."""
    import os

    if saltglue.cloud_spec(__salt__["config.get"], cloud) == (None, None) and not (
            os.environ.get("OS_CLOUD") or os.environ.get("OS_AUTH_URL")):
        return None
    return saltglue.clients(__context__, __salt__["config.get"], cloud)


def bake(flavour, cloud=None, server_id=None):
    """
    Bake the pillar flavour here, without a master, and clean up everything on failure or
    interruption (and first, what an earlier killed bake left). Strategy ``volume``, inside
    a builder VM of the cloud: a volume made from the base image is attached to this VM,
    its root filesystem changed through a chroot (the flavour's SLS from the local
    file_roots, applied with the image's salt or salt-thin), scrubbed, trimmed, detached
    and uploaded to Glance with the build's provenance, then promoted. Strategy ``local``:
    the same on a loop device over a copy of a local base image; its outputs go to Glance
    when a cloud is configured, else to a directory with a JSON manifest. salt-call prints
    each step as it starts and ends, transfers and a summary on stderr as the bake goes; a
    bad flavour exits 1 with its errors.

    CLI Example:

    .. code-block:: bash

        salt-call --local ami.bake flavour=debian-postgres
    """
    from saltami import bake as baker

    # a bad flavour is bad pillar, not a call that misses the signature: its errors alone,
    # without the usage Salt appends to invalid arguments (salt-call exits 1)
    with saltglue.salt_errors(usage=False):
        return baker.bake(__opts__, __pillar__.get("ami") or {}, flavour, _cloud_or_none(cloud),
                          server_id=server_id)


def bake_cleanup(cloud=None):
    """
    Clean up what killed bakes on this machine left: mounts, loop devices, volumes,
    attachments and candidate images, from their manifests.

    CLI Example:

    .. code-block:: bash

        salt-call --local ami.bake_cleanup
    """
    from saltami import bake as baker

    with saltglue.salt_errors():
        return baker.cleanup_abandoned(__opts__, __pillar__.get("ami") or {}, _cloud_or_none(cloud))


def builder_bake(device, sls, build_id, timeout=1800, salt="disable"):
    """
    The chroot part of an orchestrated volume bake, run on its builder by the master: mount
    the root filesystem of ``device``, apply ``sls`` (from the master's file server) with this
    minion's pillar (the flavour's, from the master's ami ext_pillar), scrub (``salt``: what
    becomes of salt in the image, the flavour's key), unmount. Returns the steps and the
    package manifest.

    CLI Example:

    .. code-block:: bash

        salt builder-1 ami.builder_bake /dev/vdb '[postgres]' debian-postgres-20261121-1
    """
    from saltami import bake as baker

    with saltglue.salt_errors():
        return baker.builder_bake(__opts__, device, sls, dict(__pillar__), build_id, timeout, salt=salt)


def scrub(root="/", trim=True, dry_run=False):
    """
    Remove from ``root`` what must not be in a golden image (SSH host keys, machine id,
    Salt and cloud-init state, leases, logs, histories, package caches, temporary files, the
    builder's authorized_keys; see saltami/scrub.py), make sure sshd gets new host keys at
    first boot, then fstrim the free space (zero-fill where that is not possible) unless
    ``trim`` is false. ``root`` may be the mount point of an image. ``dry_run`` reports what
    would go and changes nothing. Returns the report: per rule what was removed or emptied
    and the bytes freed, and the trim.

    CLI Example:

    .. code-block:: bash

        salt-call ami.scrub root=/mnt/image dry_run=True
    """
    # scrub.py is standalone (builders without the library run it as a script), so its
    # errors are given the library's meaning here
    from saltami import errors
    from saltami import scrub as scrubber

    with saltglue.salt_errors():
        try:
            return scrubber.scrub(root=root, trim=trim, dry_run=dry_run)
        except scrubber.InvalidRoot as e:
            raise errors.InvalidArgument(str(e)) from None
        except scrubber.ScrubError as e:
            raise errors.AmiError(str(e)) from None


def audit(image, secrets=None, flavour=None, kernel=None, ramdisk=None, cloud=None, disk_format=None):
    """
    Open a finished image read-only (raw or qcow2, partitioned or a bare filesystem, or the
    root filesystem of an AMI triplet with its ``kernel`` and ``ramdisk``) and list what
    must not be in it: SSH host and user keys, authorized_keys, Salt keys and minion id, a
    machine id, shell histories, cloud-init instance data, DHCP leases, cloud credentials,
    and every place a secret appears, in a file or in the image's bytes. The secrets are
    ``secrets`` (a mapping label: value, or a list), the cloud's credentials (``cloud``, else
    ``ami:cloud``), and with ``flavour`` that flavour's from pillar ``ami``. Findings name a
    secret's label, never its value; salt-call exits 1 when there is any. Needs root.
    Before anything is attached, the image must pass the format inspector nova and Glance use
    (no backing file, no external data file; with ``disk_format``, raw or qcow2 as a Glance
    image says, its content must be that format).

    CLI Example:

    .. code-block:: bash

        salt-call ami.audit /srv/out/debian-postgres.qcow2 flavour=debian-postgres
        salt-call ami.audit /srv/out/root.img kernel=/srv/out/vmlinuz ramdisk=/srv/out/initrd.img secrets='[s3cr3t]'
    """
    from saltami import audit as auditor
    from saltami import flavour as flavour_lib

    with saltglue.salt_errors():
        definition = flavour_lib.resolve(__pillar__.get("ami") or {}, flavour) if flavour else None
        name, profile = saltglue.cloud_spec(__salt__["config.get"], cloud)
        found = auditor.build_secrets(definition, cloud=name, profile=profile)
        found.update(auditor.labelled(secrets))
        report = auditor.audit(image, found, kernel=kernel, ramdisk=ramdisk, disk_format=disk_format)
    if report["findings"]:
        __context__["retcode"] = 1
    return report

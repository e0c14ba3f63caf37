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

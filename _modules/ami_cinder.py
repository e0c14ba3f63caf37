"""Cinder for image builds: volumes from images, waits, delete, upload to Glance.

Thin over ``saltami.cloud.cinder``. The cloud comes from the ``cloud`` argument (a clouds.yaml
name or a profile mapping), else ``ami:cloud`` in pillar or config, else the OS_*
environment.
"""
try:
    from saltami import saltglue
    from saltami.cloud import cinder

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

__virtualname__ = "ami_cinder"


def __virtual__():
    if not HAS_LIBS:
        return False, f"ami_cinder needs the salt-ami library and python-cinderclient: {_MISSING}"
    return __virtualname__


def _clients(cloud):
    return saltglue.clients(__context__, __salt__["config.get"], cloud)


def create(size, name=None, image=None, volume_type=None, availability_zone=None, metadata=None,
           wait=True, timeout=600, cloud=None):
    """
    Create a volume of ``size`` GiB, empty or from ``image`` (id, name or filter), and wait
    until it is available; one that goes to error is deleted.

    CLI Example:

    .. code-block:: bash

        salt-call ami_cinder.create 4 name=bake-debian image=debian-12
    """
    with saltglue.salt_errors():
        return cinder.create(_clients(cloud), size, name=name, image=image, volume_type=volume_type,
                             availability_zone=availability_zone, metadata=metadata, wait=wait,
                             timeout=timeout)


def wait(volume, status="available", timeout=600, cloud=None):
    """
    Wait until a volume has ``status`` (or one of a list); error states fail at once.

    CLI Example:

    .. code-block:: bash

        salt-call ami_cinder.wait 0d3e... status=in-use
    """
    with saltglue.salt_errors():
        return cinder.wait_status(_clients(cloud), volume, status, timeout=timeout)


def show(volume, cloud=None):
    """
    A volume by id.

    CLI Example:

    .. code-block:: bash

        salt-call ami_cinder.show 0d3e...
    """
    with saltglue.salt_errors():
        return cinder.show(_clients(cloud), volume)


def delete(volume, wait=True, timeout=300, cloud=None):
    """
    Delete a volume and wait until it is gone; an attached volume is refused. Returns
    False when there was no such volume.

    CLI Example:

    .. code-block:: bash

        salt-call ami_cinder.delete 0d3e...
    """
    with saltglue.salt_errors():
        return cinder.delete(_clients(cloud), volume, wait=wait, timeout=timeout)


def upload_to_image(volume, image_name, disk_format="raw", container_format="bare", visibility="private",
                    protected=False, wait=True, timeout=1800, cloud=None):
    """
    Upload a volume to a new Glance image and wait until the image is active.

    CLI Example:

    .. code-block:: bash

        salt-call ami_cinder.upload_to_image 0d3e... debian-12-postgres disk_format=qcow2
    """
    with saltglue.salt_errors():
        return cinder.upload_to_image(_clients(cloud), volume, image_name, disk_format=disk_format,
                                      container_format=container_format, visibility=visibility,
                                      protected=protected, wait=wait, timeout=timeout)

"""Nova for image builds: boot, wait, stop, delete, console, snapshot, volume attach.

Thin over ``saltami.cloud.nova``. The cloud comes from the ``cloud`` argument (a clouds.yaml
name or a profile mapping), else ``ami:cloud`` in pillar or config, else the OS_*
environment.
"""
try:
    from saltami import saltglue
    from saltami.cloud import nova

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

__virtualname__ = "ami_nova"


def __virtual__():
    if not HAS_LIBS:
        return False, f"ami_nova needs the salt-ami library and python-novaclient: {_MISSING}"
    return __virtualname__


def _clients(cloud):
    return saltglue.clients(__context__, __salt__["config.get"], cloud)


def boot(name, image, flavor, networks=None, key_name=None, security_groups=None, user_data=None,
         config_drive=None, metadata=None, volume_size=None, availability_zone=None, wait=True,
         timeout=600, cloud=None):
    """
    Boot a server and, with ``wait`` (default), wait until it is ACTIVE. Every argument is
    checked before anything is created; a server that goes to ERROR is deleted and its
    fault message reported.

    image
        id, name, or property filter, e.g. ``{"properties": {"os_distro": "debian"}}``
    networks
        ``none`` (default), ``auto``, or a list of network names or ids
    user_data
        the text, or a ``salt://`` URL of a file that holds it (the command line cannot
        carry a newline inside an argument)
    volume_size
        boot from a new volume of this many GiB made from the image

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.boot builder-1 debian-12 m1.small networks='[private]' user_data=salt://builder/init.sh
    """
    if isinstance(user_data, str) and user_data.startswith("salt://"):
        text = __salt__["cp.get_file_str"](user_data)
        if text is False:
            raise saltglue.SaltInvocationError(f"user_data {user_data}: no such file on the master")
        user_data = text
    with saltglue.salt_errors():
        return nova.boot(_clients(cloud), name, image=image, flavor=flavor, networks=networks,
                         key_name=key_name, security_groups=security_groups, user_data=user_data,
                         config_drive=config_drive, metadata=metadata, volume_size=volume_size,
                         availability_zone=availability_zone, wait=wait, timeout=timeout)


def wait(server, status="ACTIVE", timeout=600, cloud=None):
    """
    Wait until a server has ``status``; an ERROR fails with the server's fault message.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.wait builder-1 status=SHUTOFF timeout=120
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        return nova.wait_status(clients, nova.find_server(clients, server).id, status, timeout)


def show(server, cloud=None):
    """
    A server, by id or name.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.show builder-1
    """
    with saltglue.salt_errors():
        return nova.server_dict(nova.find_server(_clients(cloud), server))


def stop(server, wait=True, timeout=300, cloud=None):
    """
    Stop a server and wait until it is SHUTOFF.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.stop builder-1
    """
    with saltglue.salt_errors():
        return nova.stop(_clients(cloud), server, wait=wait, timeout=timeout)


def delete(server, wait=True, timeout=300, cloud=None):
    """
    Delete a server and wait until it is gone. Returns False when there was no such server.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.delete 5f0c3d1e-...
    """
    with saltglue.salt_errors():
        return nova.delete(_clients(cloud), server, wait=wait, timeout=timeout)


def console(server, length=None, cloud=None):
    """
    The server's console output (its last ``length`` lines).

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.console builder-1 length=50
    """
    with saltglue.salt_errors():
        return nova.console_output(_clients(cloud), server, length=length)


def snapshot(server, name, metadata=None, wait=True, timeout=1800, cloud=None):
    """
    createImage of a server; with ``wait``, until the Glance image is active.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.snapshot builder-1 debian-12-postgres-candidate
    """
    with saltglue.salt_errors():
        return nova.create_snapshot(_clients(cloud), server, name, metadata=metadata, wait=wait,
                                    timeout=timeout)


def attach_volume(server, volume, wait=True, timeout=300, cloud=None):
    """
    Attach a volume and wait until nova and cinder both say it is attached.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.attach_volume builder-1 0d3e...
    """
    with saltglue.salt_errors():
        return nova.attach_volume(_clients(cloud), server, volume, wait=wait, timeout=timeout)


def detach_volume(server, volume, wait=True, timeout=300, cloud=None):
    """
    Detach a volume and wait until nova and cinder both say it is detached.

    CLI Example:

    .. code-block:: bash

        salt-call ami_nova.detach_volume builder-1 0d3e...
    """
    with saltglue.salt_errors():
        return nova.detach_volume(_clients(cloud), server, volume, wait=wait, timeout=timeout)

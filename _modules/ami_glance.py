"""Glance for image builds: streamed, hash-checked upload and download (the AMI triplet too),
lookups, properties, tags, visibility, members and a careful delete.

Thin over ``saltami.cloud.glance``. The cloud comes from the ``cloud`` argument (a clouds.yaml
name or a profile mapping), else ``ami:cloud`` in pillar or config, else the OS_*
environment. Long transfers fire ``salt/ami/transfer/<name>`` events with their progress.
"""
try:
    from saltami import saltglue
    from saltami.cloud import glance

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

__virtualname__ = "ami_glance"


def __virtual__():
    if not HAS_LIBS:
        return False, f"ami_glance needs the salt-ami library and python-glanceclient: {_MISSING}"
    return __virtualname__


def _clients(cloud):
    return saltglue.clients(__context__, __salt__["config.get"], cloud)


def _progress(name):
    return saltglue.progress_reporter(__salt__["event.send"], f"salt/ami/transfer/{name}", name)


def upload(path, name, disk_format="qcow2", container_format=None, properties=None, tags=None,
           visibility="private", min_disk=None, min_ram=None, timeout=3600, method="auto", cloud=None):
    """
    Upload a local image file to Glance, streamed with constant memory; the stored
    os_hash_value is checked against the file's. A failed upload leaves no image behind.

    ``method``: ``auto`` uploads it, or where Glance refuses uploads (clouds that take images
    only through the interoperable import) stages and imports it (``glance-direct``);
    ``import`` always imports, so that the cloud's import plugins run (a conversion to raw
    on Ceph-backed clouds); ``upload`` never imports. When Glance's import converts the image
    the result says how it was verified (``verification: converted-hash``: the file
    converted here has Glance's hash; ``content``: downloaded and compared).

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.upload /srv/images/debian.qcow2 debian-12 properties='{os_distro: debian}'
        salt-call ami_glance.upload /srv/images/debian.qcow2 debian-12 method=import
    """
    with saltglue.salt_errors():
        return glance.upload(_clients(cloud), path, name, disk_format=disk_format,
                             container_format=container_format, properties=properties, tags=tags,
                             visibility=visibility, min_disk=min_disk, min_ram=min_ram,
                             progress=_progress(name), timeout=timeout, method=method)


def upload_ami_triplet(kernel, ramdisk, root, name, properties=None, tags=None, visibility="private",
                       min_disk=None, min_ram=None, timeout=3600, method="auto", cloud=None):
    """
    Upload an AMI triplet: kernel (aki), ramdisk (ari), then the root filesystem (ami) with
    kernel_id and ramdisk_id set. On failure none of the three is left. ``method`` is
    ``upload``'s, for each part.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.upload_ami_triplet /out/vmlinuz /out/initrd.img /out/root.img debian-12
    """
    with saltglue.salt_errors():
        return glance.upload_ami_triplet(_clients(cloud), kernel, ramdisk, root, name, properties=properties,
                                         tags=tags, visibility=visibility, min_disk=min_disk,
                                         min_ram=min_ram, progress=_progress(name), timeout=timeout,
                                         method=method)


def download(image, path, verify=True, timeout=3600, cloud=None):
    """
    Download an image (id, name or filter) to ``path``, streamed, checked against its
    os_hash_value before it is put in place.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.download debian-12 /tmp/debian-12.qcow2
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        found = glance.find_image(clients, image)
        return glance.download(clients, found["id"], path, progress=_progress(found["name"]),
                               verify=verify, timeout=timeout)


def show(image, cloud=None):
    """
    An image by id, name or filter (the newest match).

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.show '{properties: {ami_flavour: postgres}}'
    """
    with saltglue.salt_errors():
        return glance.find_image(_clients(cloud), image, active_only=False)


def find(name=None, tags=None, properties=None, visibility=None, owner=None, active_only=True, cloud=None):
    """
    Images matching every filter given, newest first.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.find tags='[golden]' properties='{os_distro: debian}'
    """
    with saltglue.salt_errors():
        return glance.find_images(_clients(cloud), name=name, tags=tags, properties=properties,
                                  visibility=visibility, owner=owner, active_only=active_only)


def _image_id(clients, image):
    return glance.find_image(clients, image, active_only=False)["id"]


def set_properties(image, properties, cloud=None):
    """
    Set image properties (strings).

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.set_properties debian-12 '{os_version: "12"}'
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        return glance.set_properties(clients, _image_id(clients, image), **properties)


def remove_properties(image, names, cloud=None):
    """
    Remove image properties by name.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.remove_properties debian-12 '[ami_candidate]'
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        return glance.remove_properties(clients, _image_id(clients, image), names)


def tag(image, tags, remove=False, cloud=None):
    """
    Add tags to an image, or remove them with ``remove=True``.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.tag debian-12 '[golden, postgres]'
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        change = glance.remove_tags if remove else glance.add_tags
        return change(clients, _image_id(clients, image), tags)


def set_visibility(image, visibility, cloud=None):
    """
    Set an image's visibility: private, shared, community or public.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.set_visibility debian-12 shared
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        return glance.set_visibility(clients, _image_id(clients, image), visibility)


def members(image, add=None, remove=None, cloud=None):
    """
    List a shared image's members, after adding and removing the given project ids.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.members debian-12 add='[0a1b2c...]'
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        image_id = _image_id(clients, image)
        for project in add or []:
            glance.add_member(clients, image_id, project)
        for project in remove or []:
            glance.remove_member(clients, image_id, project)
        return glance.list_members(clients, image_id)


def delete(image, force=False, timeout=300, cloud=None):
    """
    Delete an image and wait until it is gone. Refuses an image that a server still uses,
    or a protected one, unless ``force``. Returns False when there was no such image.

    CLI Example:

    .. code-block:: bash

        salt-call ami_glance.delete debian-12-candidate
    """
    with saltglue.salt_errors():
        clients = _clients(cloud)
        try:
            image_id = _image_id(clients, image)
        except saltglue.errors.NotFound:
            return False
        return glance.delete(clients, image_id, force=force, timeout=timeout)

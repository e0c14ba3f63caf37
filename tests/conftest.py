import pytest

from localcloud import fixture as localcloud_fixture


@pytest.fixture(scope="session")
def localcloud():
    """The local cloud (tests/localcloud): started for this session unless one is running
    already; stopped at the end only if this session started it (LOCALCLOUD_KEEP=1 keeps it)."""
    cloud = localcloud_fixture.start()
    yield cloud
    localcloud_fixture.stop(cloud)


@pytest.fixture(scope="session")
def demo_session(localcloud):
    """keystoneauth session of the non-admin user (project demo)."""
    return localcloud.session()


@pytest.fixture(scope="session")
def admin_session(localcloud):
    return localcloud.session(admin=True)


@pytest.fixture(scope="session")
def base_image(localcloud):
    """The base test image (Debian 12 + python3 + salt) in Glance: dict with id, name, path."""
    return localcloud.base_image()

"""Which cloud, and how: clouds.yaml names, profiles, application credentials, CA bundles,
bad credentials; secrets stay out of what is returned."""
import uuid

import pytest

from saltami import saltglue
from saltami.cloud import auth
from saltami.errors import CloudError, InvalidArgument


def test_profile_with_clouds_yaml_and_cacert_reaches_the_session(cloud_profile):
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    clients = auth.check_auth(auth.connect(profile=dict(cloud_profile, cacert=bundle)))
    assert clients.session.verify == bundle
    assert clients.nova.flavors.find(name="localcloud.small")


def test_application_credential_works(demo_session, localcloud):
    user_id = demo_session.get_user_id()
    created = demo_session.post(f"/users/{user_id}/application_credentials",
                                endpoint_filter={"service_type": "identity"},
                                json={"application_credential": {"name": f"ami-{uuid.uuid4().hex[:8]}"}}).json()
    cred = created["application_credential"]
    try:
        profile = {"auth_type": "v3applicationcredential", "region_name": "RegionOne",
                   "auth": {"auth_url": localcloud.clouds["localcloud"]["auth"]["auth_url"],
                            "application_credential_id": cred["id"],
                            "application_credential_secret": cred["secret"]}}
        clients = auth.check_auth(auth.connect(profile=profile))
        assert clients.project_id == demo_session.get_project_id()
        assert clients.nova.flavors.find(name="localcloud.small")
        assert cred["secret"] not in repr(auth.redact(profile))
    finally:
        demo_session.delete(f"/users/{user_id}/application_credentials/{cred['id']}",
                            endpoint_filter={"service_type": "identity"})


def test_bad_password_is_refused_by_keystone(cloud_profile):
    profile = dict(cloud_profile, auth={"password": "wrong"})
    with pytest.raises(CloudError) as e:
        auth.check_auth(auth.connect(profile=profile))
    assert "authentication refused by http://127.0.0.1:5000/v3" in str(e.value)
    assert "wrong" not in str(e.value)


def test_unknown_cloud_names_the_known_ones(cloud_profile):
    with pytest.raises(InvalidArgument) as e:
        auth.connect(profile=dict(cloud_profile, cloud="nope"))
    assert "cloud 'nope'" in str(e.value) and "localcloud, localcloud-admin" in str(e.value)


def test_missing_clouds_yaml_is_named():
    with pytest.raises(InvalidArgument, match="clouds_yaml '/no/such/clouds.yaml' is not a readable file"):
        auth.connect(profile={"cloud": "x", "clouds_yaml": "/no/such/clouds.yaml"})


def test_cloud_spec_order_argument_then_config_then_environment():
    config = {"ami:cloud": "from-config"}.get
    assert saltglue.cloud_spec(config, "arg") == ("arg", None)
    assert saltglue.cloud_spec(config) == ("from-config", None)
    assert saltglue.cloud_spec({"ami:cloud": {"cloud": "c", "region_name": "r"}}.get) == \
        (None, {"cloud": "c", "region_name": "r"})
    assert saltglue.cloud_spec({}.get) == (None, None)


def test_redact_hides_every_secret_at_any_depth():
    profile = {"auth": {"password": "p1", "username": "u", "application_credential_secret": "s1"},
               "extra": [{"token": "t1"}]}
    shown = repr(auth.redact(profile))
    assert "p1" not in shown and "s1" not in shown and "t1" not in shown and "'u'" in shown

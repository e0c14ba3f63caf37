"""What a build's minion is given (saltami/pipeline/minion_server.py): its user-data carries a
one-time token and no key, its pillar comes from no top file unless the flavour asks, and
the master needs its autosign grains directory for it; pure logic, no master or cloud."""
import json
import re

import pytest

from saltami.errors import InvalidArgument
from saltami.pipeline import minion_server
from saltami.saltmaster import AUTOSIGN_GRAIN, NO_PILLARENV, Master, token_id

ADDRESS = {"master": "10.0.2.2", "master_port": 4506, "publish_port": 4505}


def config_of(user_data):
    """The minion config the user-data writes (as JSON, which is YAML)."""
    match = re.search(r"printf '%s\\n' '(\{.*\})' > /run/salt-ami/etc/minion", user_data)
    return json.loads(match.group(1))


def test_user_data_carries_a_token_and_no_key():
    token = Master.new_token()
    data = minion_server.user_data("ami-builder-x", token, ADDRESS, "3007.15")
    assert "PRIVATE KEY" not in data and "BEGIN" not in data
    conf = config_of(data)
    assert conf["autosign_grains"] == [AUTOSIGN_GRAIN] and conf["grains"] == {AUTOSIGN_GRAIN: token}
    assert conf["pki_dir"].startswith("/run/") and conf["master"] == "10.0.2.2"
    # the build records only this, which does not give the token back
    assert token not in token_id(token) and len(token_id(token)) == 64


def test_build_minions_compile_no_top_file_pillar_unless_asked():
    assert config_of(minion_server.user_data("m", "t", ADDRESS, "3007.15"))["pillarenv"] == NO_PILLARENV
    assert "pillarenv" not in config_of(minion_server.user_data("m", "t", ADDRESS, "3007.15", master_pillar=True))


def test_the_salt_bootstrap_waits_for_apt_and_takes_the_proxy():
    data = minion_server.user_data("m", "t", ADDRESS, "3007.15", proxy="http://proxy.example:3128")
    assert "DPkg::Lock::Timeout" in data and "https_proxy=http://proxy.example:3128" in data
    # what it installs is recorded on /run for the scrub's `salt: remove`, never on the disk
    assert minion_server.INSTALLED.startswith("/run/") and f">> {minion_server.INSTALLED}" in data
    assert "proxy" not in minion_server.user_data("m", "t", ADDRESS, "3007.15")


def test_a_master_without_autosign_grains_dir_is_told_what_to_add():
    with pytest.raises(InvalidArgument, match="autosign_grains_dir: /etc/salt/autosign_grains"):
        Master({"id": "master"}).check_admission()


def test_tokens_are_admitted_and_revoked_by_their_hash(tmp_path):
    master = Master({"id": "master", "autosign_grains_dir": str(tmp_path / "grains")})
    first, second = Master.new_token(), Master.new_token()
    master.admit(first)
    master.admit(second)
    path = tmp_path / "grains" / AUTOSIGN_GRAIN
    # salt's master ignores a grains file that others may write
    assert path.stat().st_mode & 0o022 == 0
    assert master.revoke(token_id(first)) and not master.revoke(token_id(first))
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [second]

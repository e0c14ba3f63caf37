"""saltami.flavour: flavours from pillar, merged, validated, named and fingerprinted. Pure
logic: no cloud, no Salt daemons."""
import datetime
import re
import types
from pathlib import Path

import pytest
import yaml

from saltami import flavour
from saltami.errors import InvalidArgument, NotFound

REPO = Path(__file__).resolve().parents[2]
UUID = "6f1c0a8e-4b7d-4c1e-9a51-0d2f3c4b5a69"
MINIMAL = {"base": "debian-12", "sls": ["postgres"], "flavor": "m1.small"}


def pillar(defaults=None, **flavours):
    ami = {"flavours": {name.replace("_", "-"): spec for name, spec in flavours.items()}}
    if defaults is not None:
        ami["defaults"] = defaults
    return ami


def resolve(spec, defaults=None):
    return flavour.resolve(pillar(defaults, f=spec), "f")


def problems(spec, defaults=None):
    with pytest.raises(InvalidArgument) as e:
        resolve(spec, defaults)
    return str(e.value).splitlines()


def one_problem(spec, key):
    """The single problem reported for ``spec``, which must be at ``key``."""
    lines = problems(spec)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"flavour 'f': key '{key}': "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ the example
@pytest.fixture(scope="module")
def example():
    return yaml.safe_load((REPO / "pillar.example").read_text())["ami"]


def test_example_resolves(example):
    flavours = flavour.resolve_all(example)
    assert flavour.names(example) == sorted(flavours) == ["debian-postgres", "debian-postgres-dev"]
    pg, dev = flavours["debian-postgres"], flavours["debian-postgres-dev"]
    assert pg["base"] == {"properties": {"os_distro": "debian", "os_version": "12"}}
    assert pg["sls"] == ["postgres", "postgres.python"]
    assert pg["keep"] == 3 and pg["properties"]["os_distro"] == "debian"
    assert dev["extends"] == "debian-postgres"
    assert dev["sls"] == ["postgres", "postgres.python", "postgres.devtools"]
    assert dev["tags"] == ["golden", "postgres", "dev"]
    assert dev["properties"] == pg["properties"] and dev["base"] == pg["base"]
    assert dev["test"] == {"sls": dev["sls"], "cmd": "psql --version && command -v pg_top",
                           "expect_no_changes": True}
    assert pg["test"]["sls"] == pg["sls"] and "import psycopg" in pg["test"]["cmd"]


def test_example_sls_exist_in_the_formulas(example):
    roots = REPO / "salt" / "formulas"

    def exists(name):
        path = roots / name.replace(".", "/")
        return path.with_suffix(".sls").is_file() or (path / "init.sls").is_file()

    for spec in flavour.resolve_all(example).values():
        flavour.check_sls(spec, exists)
    for name in ("amitest", "amitest.extra"):
        assert exists(name)


# ------------------------------------------------------------------------------ defaults
def test_minimal_flavour_gets_every_default():
    f = resolve(MINIMAL)
    assert f == {
        "name": "f", "description": None, "extends": None, "from_parent": False, "base": "debian-12",
        "builder": None,
        "sls": ["postgres"], "pillar": {}, "flavor": "m1.small", "networks": "none",
        "key_name": None, "security_groups": [], "volume_size": None, "strategy": "snapshot",
        "disk_format": "qcow2", "outputs": ["qcow2"], "output_dir": None,
        "image_name": "{flavour}-{date}-{time}", "properties": {}, "tags": [],
        "visibility": "private", "members": [], "keep": 3, "prune_shared": "hide", "min_disk": None, "min_ram": None,
        "validate": True, "test": {"sls": ["postgres"], "cmd": None, "expect_no_changes": True}, "master": None,
        "master_pillar": False, "proxy": None, "config_drive": None, "salt": "disable",
        "timeouts": {"boot": 600, "minion": 300, "apply": 1800, "snapshot": 1800, "validate": 900,
                     "claim": 3600},
    }


def test_defaults_are_inherited_and_overridden():
    defaults = {"flavor": "m1.large", "tags": ["golden"], "sls": ["common"], "timeouts": {"apply": 60}}
    f = resolve({"base": "debian-12", "sls": "postgres", "tags": ["db"], "timeouts": {"boot": 30}}, defaults)
    assert f["flavor"] == "m1.large"
    assert f["sls"] == ["common", "postgres"] and f["tags"] == ["golden", "db"]
    assert f["timeouts"] == {"boot": 30, "minion": 300, "apply": 60, "snapshot": 1800, "validate": 900,
                             "claim": 3600}


def test_defaults_cannot_extend():
    with pytest.raises(InvalidArgument, match=r"ami:defaults: key 'extends'"):
        resolve(MINIMAL, {"extends": "f"})


def test_sls_and_tags_shorthand_and_dedup():
    f = resolve({**MINIMAL, "sls": ["a", "b.c", "a"], "tags": "golden"})
    assert f["sls"] == ["a", "b.c"] and f["tags"] == ["golden"]


def test_salt_mapping_types_are_accepted():
    # pillar can hold mappings and sequences that are not dicts and lists
    ami = types.MappingProxyType({"flavours": types.MappingProxyType(
        {"f": types.MappingProxyType({**MINIMAL, "sls": ("postgres",)})})})
    assert flavour.resolve(ami, "f")["sls"] == ["postgres"]


# ------------------------------------------------------------------------------ extends
def test_extends_merges_mappings_replaces_lists_appends_sls_and_tags():
    ami = pillar(
        parent={**MINIMAL, "sls": ["postgres", "postgres.python"], "tags": ["db", "golden"],
                "security_groups": ["a", "b"], "pillar": {"pg": {"version": 15, "port": 5432}},
                "properties": {"os_distro": "debian", "os_version": "12"},
                "test": {"cmd": "psql --version", "expect_no_changes": False}},
        child={"extends": "parent", "sls": ["postgres.devtools", "postgres"], "tags": ["dev", "db"],
               "security_groups": ["c"], "pillar": {"pg": {"port": 5433}, "dev": True},
               "properties": {"os_version": "13"}, "test": {"cmd": "pg_top --version"}},
    )
    f = flavour.resolve(ami, "child")
    assert f["sls"] == ["postgres", "postgres.python", "postgres.devtools"]
    assert f["tags"] == ["db", "golden", "dev"]
    assert f["security_groups"] == ["c"]
    assert f["pillar"] == {"pg": {"version": 15, "port": 5433}, "dev": True}
    assert f["properties"] == {"os_distro": "debian", "os_version": "13"}
    assert f["test"] == {"sls": f["sls"], "cmd": "pg_top --version", "expect_no_changes": False}
    assert f["name"] == "child" and f["extends"] == "parent"
    assert flavour.resolve(ami, "parent")["sls"] == ["postgres", "postgres.python"]


def test_extends_chain():
    ami = pillar(defaults={"tags": ["golden"]},
                 a={**MINIMAL, "sls": ["a"], "keep": 5, "description": "root"},
                 b={"extends": "a", "sls": ["b"], "keep": 2},
                 c={"extends": "b", "sls": ["c"], "tags": ["c"]})
    f = flavour.resolve(ami, "c")
    assert f["sls"] == ["a", "b", "c"] and f["tags"] == ["golden", "c"]
    assert (f["keep"], f["description"], f["extends"]) == (2, "root", "b")


def test_base_is_replaced_whole():
    ami = pillar(a={**MINIMAL, "base": {"name": "debian-12", "tags": ["official"]}},
                 b={"extends": "a", "base": {"properties": {"os_distro": "ubuntu"}}})
    assert flavour.resolve(ami, "b")["base"] == {"properties": {"os_distro": "ubuntu"}}


def test_null_drops_an_inherited_value():
    ami = pillar(a={**MINIMAL, "key_name": "ops", "tags": ["x"], "volume_size": 10},
                 b={"extends": "a", "key_name": None, "tags": None, "volume_size": None})
    f = flavour.resolve(ami, "b")
    assert (f["key_name"], f["tags"], f["volume_size"]) == (None, [], None)


@pytest.mark.parametrize("flavours, loop", [
    ({"a": {"extends": "b"}, "b": {"extends": "a"}}, "a -> b -> a"),
    ({"a": {"extends": "a"}}, "a -> a"),
    ({"x": {"extends": "a"}, "a": {"extends": "b"}, "b": {"extends": "c"}, "c": {"extends": "a"}},
     "a -> b -> c -> a"),
])
def test_extends_loop_names_the_cycle(flavours, loop):
    with pytest.raises(InvalidArgument, match=f"inheritance loop {re.escape(loop)}$"):
        flavour.resolve({"flavours": flavours}, next(iter(flavours)))


def test_unknown_parent_is_named_with_known_flavours():
    ami = pillar(debian={**MINIMAL}, child={"extends": "debain"})
    with pytest.raises(InvalidArgument) as e:
        flavour.resolve(ami, "child")
    assert str(e.value) == ("flavour 'child': key 'extends': no flavour 'debain' (did you mean "
                            "'debian'?) (allowed: known flavours child, debian)")


def test_unknown_flavour_lists_known_ones():
    with pytest.raises(NotFound, match=r"no flavour 'debian-pg'.*did you mean 'debian-postgres'.*"
                                       r"known flavours: debian-postgres, other"):
        flavour.resolve(pillar(debian_postgres=MINIMAL, other=MINIMAL), "debian-pg")
    with pytest.raises(NotFound, match=r"known flavours: none"):
        flavour.resolve({}, "x")
    assert flavour.names(None) == [] and flavour.resolve_all({"flavours": None}) == {}


def test_bad_flavour_names_and_sections():
    with pytest.raises(InvalidArgument, match=r"flavour name 'web/db' cannot be used"):
        flavour.resolve({"flavours": {"web/db": MINIMAL}}, "web/db")
    with pytest.raises(InvalidArgument, match=r"flavour names must be strings; quote 12"):
        flavour.names({"flavours": {12: MINIMAL}})
    with pytest.raises(InvalidArgument, match=r"ami:flavours must be a mapping, not list"):
        flavour.names({"flavours": ["a"]})
    with pytest.raises(InvalidArgument, match=r"flavour 'f' must be a mapping, not str"):
        flavour.resolve({"flavours": {"f": "debian"}}, "f")


# ------------------------------------------------------------------------------ validation
def test_unknown_key_with_suggestion():
    line = one_problem({**MINIMAL, "flavour": "m1.large"}, "flavour")
    assert "unknown key (did you mean 'flavor'?)" in line
    assert "(allowed: description, extends, from_parent, base, builder, sls, pillar, flavor," in line
    assert "did you mean 'boot'" in one_problem({**MINIMAL, "timeouts": {"bot": 5}}, "timeouts.bot")
    lines = problems({**MINIMAL, "base": {"tag": "x"}})
    assert lines[0].startswith("flavour 'f': key 'base.tag': unknown key (did you mean 'tags'?)")
    assert lines[1].startswith("flavour 'f': key 'base': names no image")


def test_missing_required_keys_are_all_reported():
    lines = problems({"keep": 0})
    keys = [line.split(":")[1] for line in lines]
    assert keys == [" key 'base'", " key 'sls'", " key 'keep'", " key 'flavor'"]
    assert all(line.startswith("flavour 'f': key '") for line in lines)
    assert "required, and not set" in lines[0] and "0 is too small (allowed: integers >= 1)" in lines[2]
    assert "required with strategy 'snapshot'" in lines[3]


@pytest.mark.parametrize("key, value, expected", [
    ("keep", "3", "must be an integer, not str '3' (allowed: integers >= 1)"),
    ("keep", True, "must be an integer, not bool True"),
    ("volume_size", 0, "0 is too small (allowed: integers >= 1)"),
    ("min_ram", -1, "-1 is too small (allowed: integers >= 0)"),
    ("sls", 5, "must be a list of non-empty strings, not int 5"),
    ("sls", ["a", 3, ""], "must hold non-empty strings only, not int 3, str ''"),
    ("sls", [], "is empty: a flavour applies at least one SLS"),
    ("sls", ["postgres/client", "a..b", ".a", "ok.b-c_d"], "not SLS names: 'postgres/client', 'a..b', '.a'"),
    ("flavor", "", "must be a non-empty string, not str ''"),
    ("pillar", ["x"], "must be a mapping, not list ['x']"),
    ("pillar", {"x": {1, 2}}, "cannot hash this data: a set value cannot be hashed"),
    ("properties", "os_distro=debian", "must be a mapping, not str"),
    ("visibility", "hidden", "'hidden' is not accepted (allowed: private, shared, community, public)"),
    ("strategy", "chroot", "'chroot' is not accepted (allowed: snapshot, volume, local)"),
    ("outputs", ["qcow2", "vmdk"], "not outputs: 'vmdk' (allowed: qcow2, qcow2-zstd, raw, ami)"),
    ("outputs", [], "must name at least one output (allowed: qcow2, qcow2-zstd, raw, ami)"),
    ("disk_format", "vhd", "'vhd' is not accepted (allowed: qcow2, raw)"),
    ("networks", 5, "must be 'none', 'auto' or a list of network names or ids, not int 5"),
    ("networks", [], "must be 'none', 'auto' or a list"),
    ("tags", {"a": 1}, "must be a list of non-empty strings, not dict"),
    ("timeouts", 60, "must be a mapping, not int 60 (allowed: keys boot, minion, apply, snapshot, validate, claim)"),
    ("test", {"expect_no_changes": "yes"}, "must be a boolean, not str 'yes' (allowed: true, false)"),
    ("base", 42, "must be a string or a mapping, not int 42"),
    ("master", 8, "must be a non-empty string, not int 8"),
])
def test_wrong_values_name_what_is_expected(key, value, expected):
    where = "test.expect_no_changes" if key == "test" else key
    assert expected in one_problem({**MINIMAL, key: value}, where)


def test_every_problem_of_a_flavour_in_one_error():
    lines = problems({**MINIMAL, "keep": 0, "visibility": "secret", "sls": ["a b"], "colour": "red",
                      "properties": {"ami_flavour": "x", "os_version": 12}})
    keys = sorted(re.match(r"flavour 'f': key '([^']+)'", line).group(1) for line in lines)
    assert keys == ["colour", "keep", "properties.ami_flavour", "properties.os_version", "sls", "visibility"]


def test_resolve_all_reports_every_flavour():
    with pytest.raises(InvalidArgument) as e:
        flavour.resolve_all(pillar(good=MINIMAL, bad1={**MINIMAL, "keep": 0}, bad2={"extends": "nope"}))
    lines = str(e.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("flavour 'bad1': key 'keep'")
    assert lines[1].startswith("flavour 'bad2': key 'extends'")


def test_networks():
    assert resolve({**MINIMAL, "networks": "auto"})["networks"] == "auto"
    assert resolve({**MINIMAL, "networks": "private"})["networks"] == ["private"]
    assert resolve({**MINIMAL, "networks": ["a", "b"]})["networks"] == ["a", "b"]


# ------------------------------------------------------------------------------ base
@pytest.mark.parametrize("base, normalised", [
    ("debian-12", "debian-12"),
    ({"id": UUID}, UUID),
    ({"name": "debian-12"}, {"name": "debian-12"}),
    ({"tags": "official", "visibility": "public"}, {"tag": ["official"], "visibility": "public"}),
    ({"properties": {"os_distro": "debian", "ami_flavour": "base"}, "owner": "p1", "name": None},
     {"properties": {"os_distro": "debian", "ami_flavour": "base"}, "owner": "p1"}),
])
def test_base_forms_become_find_image_refs(base, normalised):
    assert resolve({**MINIMAL, "base": base})["base"] == normalised


@pytest.mark.parametrize("base, key, expected", [
    ({"id": "debian-12"}, "base.id", "'debian-12' is not a Glance image id (allowed: a UUID"),
    ({"id": UUID, "name": "x"}, "base", "id names one image: it cannot be combined with name"),
    ({}, "base", "names no image"),
    ({"visibility": "public"}, "base", "names no image"),
    ({"name": "x", "visibility": "everyone"}, "base.visibility",
     "(allowed: private, shared, community, public, all)"),
    ({"properties": {"os_version": 12}}, "base.properties.os_version", "must be a string, not int 12"),
])
def test_bad_base(base, key, expected):
    assert expected in one_problem({**MINIMAL, "base": base}, key)


LOCAL = {"strategy": "local", "sls": ["postgres"]}


@pytest.mark.parametrize("base", [{"file": "/srv/images/debian.qcow2"}, {"vanilla": "debian-12"}])
def test_local_bases(base):
    f = resolve({**LOCAL, "base": base, "outputs": ["ami", "qcow2-zstd"], "output_dir": "/srv/out"})
    assert f["base"] == base and f["outputs"] == ["ami", "qcow2-zstd"] and f["output_dir"] == "/srv/out"
    assert f["flavor"] is None  # no builder boots


@pytest.mark.parametrize("spec, key, expected", [
    ({**LOCAL, "base": {"file": "images/debian.raw"}}, "base",
     "file str 'images/debian.raw' is not an absolute path (allowed: {file: /absolute/path"),
    ({**LOCAL, "base": {"vanilla": "debian-13"}}, "base", "no vanilla image str 'debian-13' (allowed: debian-12)"),
    ({**LOCAL, "base": {"vanilla": "debian-12", "name": "x"}}, "base",
     "a local base takes one of file, vanilla alone, not name, vanilla"),
    ({**LOCAL, "base": "debian-12"}, "base", "strategy 'local' bakes a local image, not str 'debian-12'"),
    ({**MINIMAL, "base": {"vanilla": "debian-12"}}, "base",
     "a local base needs strategy 'local' (strategy is 'snapshot')"),
    ({**LOCAL, "base": {"vanilla": "debian-12"}, "outputs": ["qcow2", "vmdk"]}, "outputs",
     "not outputs: 'vmdk' (allowed: qcow2, qcow2-zstd, raw, ami)"),
    ({**LOCAL, "base": {"vanilla": "debian-12"}, "output_dir": "out"}, "output_dir",
     "must be an absolute path, not str 'out'"),
])
def test_bad_local_flavours(spec, key, expected):
    assert expected in one_problem(spec, key)


# ------------------------------------------------------------------------------ properties, publication
def test_properties_refuse_reserved_and_glance_attributes():
    assert "reserved for the build's own provenance" in one_problem(
        {**MINIMAL, "properties": {"ami_fingerprint": "x"}}, "properties.ami_fingerprint")
    assert "set it with the flavour's own key 'min_disk'" in one_problem(
        {**MINIMAL, "properties": {"min_disk": "5"}}, "properties.min_disk")
    assert "set it with the flavour's own key 'image_name'" in one_problem(
        {**MINIMAL, "properties": {"name": "x"}}, "properties.name")
    assert "Glance or the build sets it" in one_problem(
        {**MINIMAL, "properties": {"disk_format": "raw"}}, "properties.disk_format")
    assert "quote numbers and booleans" in one_problem(
        {**MINIMAL, "properties": {"hw_qemu_guest_agent": True}}, "properties.hw_qemu_guest_agent")
    assert "255 characters" in one_problem({**MINIMAL, "properties": {"x": "y" * 256}}, "properties.x")
    props = {"os_distro": "debian", "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi"}
    assert resolve({**MINIMAL, "properties": props})["properties"] == props


def test_members_need_shared_visibility():
    line = one_problem({**MINIMAL, "members": ["p1"]}, "members")
    assert "visibility is 'private'" in line and "(allowed: members with visibility 'shared')" in line
    public = {**MINIMAL, "members": ["p1"], "visibility": "public"}
    assert "visibility is 'public'" in one_problem(public, "members")
    assert resolve({**MINIMAL, "members": "p1", "visibility": "shared"})["members"] == ["p1"]


def test_volume_strategy_needs_volume_size():
    assert "required with strategy 'volume'" in one_problem({**MINIMAL, "strategy": "volume"}, "volume_size")
    # a refused size is reported once, as refused
    refused = {**MINIMAL, "strategy": "volume", "volume_size": "10"}
    assert "must be an integer" in one_problem(refused, "volume_size")
    assert resolve({**MINIMAL, "strategy": "volume", "volume_size": 4})["volume_size"] == 4


def test_test_settings():
    f = resolve({**MINIMAL, "test": {"sls": "amitest.extra", "cmd": "test -x /usr/local/bin/amitest-hello"}})
    assert f["test"] == {"sls": ["amitest.extra"], "cmd": "test -x /usr/local/bin/amitest-hello",
                         "expect_no_changes": True}
    assert resolve({**MINIMAL, "test": {"sls": []}})["test"]["sls"] == []
    assert resolve({**MINIMAL, "test": {"sls": None}})["test"]["sls"] == ["postgres"]
    assert "not SLS names" in one_problem({**MINIMAL, "test": {"sls": ["a/b"]}}, "test.sls")
    assert "must be a non-empty string, not list" in one_problem({**MINIMAL, "test": {"cmd": ["a"]}},
                                                                 "test.cmd")


# ------------------------------------------------------------------------------ image names
@pytest.mark.parametrize("pattern, expected", [
    ("{flavour}", "'{flavour}' would give two builds the same name: "
                  "it needs one of {time}, {fingerprint}, {build}"),
    ("{flavour}-{date}", "'{flavour}-{date}' would give two builds the same name: "
                         "it needs one of {time}, {fingerprint}, {build}"),
    ("golden", "'golden' would give two builds the same name"),
    ("{flavour}-{date", "image name pattern '{flavour}-{date': expected '}' before end of string"),
    ("{flavour}}-{date}", "Single '}' encountered"),
    ("{flavor}-{date}", "unknown field {flavor} (did you mean 'flavour'?)"),
    ("{}-{date}", "unknown field {}"),
    ("{0}-{date}", "unknown field {0}"),
    ("{flavour.upper}-{date}", "unknown field {flavour.upper}"),
    ("{flavour!r}-{date}", "{flavour} takes a format spec only"),
    ("{flavour}-{time:d}", "Unknown format code 'd'"),
    ("{flavour}-{time}" + "x" * 250, "(allowed: names of 1 to 255 characters"),
])
def test_bad_image_name_patterns(pattern, expected):
    line = one_problem({**MINIMAL, "image_name": pattern}, "image_name")
    assert expected in line
    assert "(allowed: " in line


@pytest.mark.parametrize("pattern", ["{flavour}-{date}-{time}", "{flavour}-{fingerprint:.12}",
                                     "build-{build}", "{{golden}}-{date}{time}"])
def test_good_image_name_patterns(pattern):
    assert resolve({**MINIMAL, "image_name": pattern})["image_name"] == pattern


def test_render_name():
    fields = {"flavour": "debian-postgres", "date": "20250131", "time": "235901",
              "fingerprint": "0123456789abcdef" * 4, "build": "a1b2c3"}
    assert flavour.render_name("{flavour}-{date}-{time}", **fields) == "debian-postgres-20250131-235901"
    assert flavour.render_name("{flavour}-{fingerprint:.12}", **fields) == "debian-postgres-0123456789ab"
    assert flavour.render_name("{{x}}-{build}", build=42) == "{x}-42"
    with pytest.raises(InvalidArgument, match=r"pattern '\{flavour\}-\{date\}' needs a value for date"):
        flavour.render_name("{flavour}-{date}", flavour="x")
    with pytest.raises(InvalidArgument, match=r"unknown image name fields: stamp"):
        flavour.render_name("{date}", date="1", stamp="2")
    with pytest.raises(InvalidArgument, match=r"unknown field \{when\}"):
        flavour.render_name("{when}", date="1")
    with pytest.raises(InvalidArgument, match=r"names of 1 to 255 characters"):
        flavour.render_name("{flavour}{build}", flavour="x" * 200, build="y" * 56)


# ------------------------------------------------------------------------------ check_sls
def test_check_sls_names_the_missing_ones():
    f = resolve({**MINIMAL, "sls": ["postgres", "postgres.nope", "gone"],
                 "test": {"sls": ["gone", "checks", "postgres"]}})
    there = {"postgres"}
    with pytest.raises(InvalidArgument) as e:
        flavour.check_sls(f, there.__contains__)
    lines = str(e.value).splitlines()
    assert lines[0].startswith("flavour 'f': key 'sls': no SLS 'postgres.nope', 'gone' "
                               "on the master's file server")
    assert lines[1].startswith("flavour 'f': key 'test.sls': no SLS 'checks'")
    flavour.check_sls(f, lambda name: True)


# ------------------------------------------------------------------------------ hashes
def test_canonical_hash():
    a = {"b": [1, {"y": "é", "x": None}], "a": True}
    b = {"a": True, "b": [1, {"x": None, "y": "é"}]}
    assert flavour.canonical_hash(a) == flavour.canonical_hash(b)
    assert re.fullmatch(r"[0-9a-f]{64}", flavour.canonical_hash(a))
    assert flavour.canonical_hash({"a": 1}) != flavour.canonical_hash({"a": "1"})
    date = datetime.date(2025, 1, 31)
    assert flavour.canonical_hash({"d": date}) == flavour.canonical_hash({"d": "2025-01-31"})
    for bad in ({"x": b"bytes"}, {1: "a", "b": 2}, {"x": float("nan")}):
        with pytest.raises(InvalidArgument, match="cannot hash this data"):
            flavour.canonical_hash(bad)


@pytest.fixture
def image_flavour():
    return {**MINIMAL, "sls": ["postgres", "postgres.python"], "pillar": {"pg": {"port": 5432}},
            "properties": {"os_distro": "debian"}}


def _fingerprint(spec, base_hash="h" * 128, sls_hash="s" * 64, salt_version="3007.15"):
    """As the build computes it."""
    f = resolve(spec)
    return flavour.fingerprint({
        "base_id": UUID, "base_hash": base_hash, "sls_hash": sls_hash,
        "pillar_hash": flavour.canonical_hash(f["pillar"]), "salt_version": salt_version,
        "version": "0.1.0", "settings_hash": flavour.canonical_hash(flavour.image_settings(f)),
    })


def test_fingerprint_is_stable(image_flavour):
    fp = _fingerprint(image_flavour)
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert _fingerprint(image_flavour) == fp
    reordered = dict(reversed(list(image_flavour.items())))
    reordered["pillar"] = {"pg": {"port": 5432}}
    assert _fingerprint(reordered) == fp
    parts = {"a": 1, "b": [1, 2], "c": {"x": "y", "z": None}}
    assert flavour.fingerprint(dict(reversed(list(parts.items())))) == flavour.fingerprint(parts)
    assert flavour.image_settings(resolve(image_flavour)) == {
        "sls": ["postgres", "postgres.python"], "strategy": "snapshot", "volume_size": None,
        "flavor": "m1.small", "properties": {"os_distro": "debian"}, "min_disk": None, "min_ram": None,
        "outputs": ["qcow2"], "salt": "disable", "master_pillar": False}


@pytest.mark.parametrize("change", [
    {"sls": ["postgres"]},
    {"sls": ["postgres.python", "postgres"]},
    {"pillar": {"pg": {"port": 5433}}},
    {"properties": {"os_distro": "ubuntu"}},
    {"strategy": "volume", "volume_size": 4},
    {"flavor": "m1.large"},
    {"min_disk": 4},
    {"outputs": ["qcow2", "ami"]},
    {"salt": "keep"},
    {"master_pillar": True},
])
def test_fingerprint_follows_what_makes_the_image(image_flavour, change):
    assert _fingerprint({**image_flavour, **change}) != _fingerprint(image_flavour)


@pytest.mark.parametrize("change", [
    {"keep": 9}, {"visibility": "shared", "members": ["p1"]}, {"tags": ["x"]},
    {"image_name": "{flavour}-{build}"}, {"description": "d"}, {"networks": "auto"},
    {"key_name": "ops"}, {"master": "10.0.0.1"}, {"timeouts": {"apply": 5}}, {"test": {"cmd": "true"}},
])
def test_fingerprint_ignores_publication_and_builder_plumbing(image_flavour, change):
    assert _fingerprint({**image_flavour, **change}) == _fingerprint(image_flavour)


def test_fingerprint_follows_base_and_versions(image_flavour):
    fp = _fingerprint(image_flavour)
    assert _fingerprint(image_flavour, base_hash="g" * 128) != fp
    assert _fingerprint(image_flavour, sls_hash="t" * 64) != fp
    assert _fingerprint(image_flavour, salt_version="3007.16") != fp
    with pytest.raises(InvalidArgument, match="fingerprint parts must be a mapping"):
        flavour.fingerprint(["a"])

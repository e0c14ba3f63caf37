"""Unit tests of the cloud-init subset that the chroot driver runs in test instances
(tests/localcloud/drivers/cloudinit_lite.py). No cloud needed: files go under tmp_path."""
import base64
import gzip
import os
import stat
import sys
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "localcloud" / "drivers"))
import cloudinit_lite as ci  # noqa: E402


def mime(*parts):
    msg = MIMEMultipart()
    for subtype, text, filename in parts:
        part = MIMEText(text, subtype)
        if filename:
            part.add_header("Content-Disposition", "attachment", filename=filename)
        msg.attach(part)
    return msg.as_bytes()


def script_names(plan):
    return [name for name, _ in plan.scripts]


def test_shell_script_is_one_part():
    plan = ci.parse(b"#!/bin/sh\necho hi\n")
    assert plan.scripts == [("part-001", b"#!/bin/sh\necho hi\n")]
    assert not plan.boot_script and not plan.write_files and not plan.warnings


def test_gzipped_user_data_is_unpacked():
    plan = ci.parse(gzip.compress(b"#!/bin/sh\necho hi\n"))
    assert plan.scripts == [("part-001", b"#!/bin/sh\necho hi\n")]


def test_cloud_config_gives_bootcmd_write_files_and_runcmd():
    plan = ci.parse(b"#cloud-config\nbootcmd: [echo boot]\n"
                    b"write_files: [{path: /etc/x, content: hi}]\n"
                    b"runcmd:\n - echo one\n - [printf, '%s\\n', it's two]\n")
    assert plan.boot_script == "#!/bin/sh\necho boot\n"
    assert plan.write_files == [{"path": "/etc/x", "content": "hi"}]
    assert plan.scripts == [("runcmd", "#!/bin/sh\necho one\nprintf '%s\\n' 'it'\"'\"'s two'\n")]


def test_unsupported_keys_and_bad_yaml_are_warnings():
    assert ci.parse(b"#cloud-config\npackages: [vim]\n").warnings == [
        "cloud-config keys not supported, ignored: packages"]
    bad = ci.parse(b"#cloud-config\nruncmd: [unclosed\n")
    assert bad.scripts == [] and "not valid YAML" in bad.warnings[0]


def test_malformed_sections_are_ignored_with_a_warning():
    plan = ci.parse(b"#cloud-config\nruncmd: echo not a list\nwrite_files: [just a string]\n")
    assert plan.scripts == [] and plan.write_files == []
    assert [w.split()[0] for w in plan.warnings] == ["runcmd", "write_files"]


def test_multipart_scripts_run_in_name_order_and_runcmd_after_parts():
    data = mime(("x-shellscript", "#!/bin/sh\necho b\n", "b.sh"),
                ("cloud-config", "#cloud-config\nruncmd: [echo r]\n", None),
                ("x-shellscript", "#!/bin/sh\necho a\n", "a.sh"),
                ("plain", "#!/bin/sh\necho detected\n", None))
    assert script_names(ci.parse(data)) == ["a.sh", "b.sh", "part-004", "runcmd"]


def test_later_cloud_config_part_replaces_a_key():
    data = mime(("cloud-config", "#cloud-config\nruncmd: [echo first]\nbootcmd: [echo b]\n", None),
                ("cloud-config", "#cloud-config\nruncmd: [echo second]\n", None))
    plan = ci.parse(data)
    assert plan.scripts == [("runcmd", "#!/bin/sh\necho second\n")]
    assert plan.boot_script == "#!/bin/sh\necho b\n"


def test_unsupported_part_types_are_warnings():
    plan = ci.parse(mime(("plain", "#include http://example.com/x\n", None)))
    assert plan.warnings == ["part-001: text/x-include-url is not supported, ignored"]


HELLO = b"hello\n"
ENCODED_HELLO = {None: HELLO.decode(), "text": HELLO.decode(), "b64": base64.b64encode(HELLO).decode(),
                 "base64": base64.b64encode(HELLO).decode(), "gzip": gzip.compress(HELLO),
                 "gz+b64": base64.b64encode(gzip.compress(HELLO)).decode(),
                 "gzip+base64": base64.b64encode(gzip.compress(HELLO)).decode()}


@pytest.mark.parametrize("encoding", list(ENCODED_HELLO))
def test_write_files_encodings(tmp_path, encoding):
    entry = {"path": "/a/b/f", "content": ENCODED_HELLO[encoding], "encoding": encoding}
    ci.write_file(entry, str(tmp_path))
    assert (tmp_path / "a/b/f").read_bytes() == HELLO


@pytest.mark.parametrize("permissions, mode", [(None, 0o644), ("0600", 0o600), ("0o750", 0o750),
                                               (0o640, 0o640), ("755", 0o755)])
def test_write_files_permissions(tmp_path, permissions, mode):
    ci.write_file({"path": "/f", "content": "x", "permissions": permissions}, str(tmp_path))
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


def test_write_files_append(tmp_path):
    (tmp_path / "f").write_text("one\n")
    ci.write_file({"path": "/f", "content": "two\n", "append": True}, str(tmp_path))
    ci.write_file({"path": "/g", "content": "new\n", "append": True}, str(tmp_path))
    assert (tmp_path / "f").read_text() == "one\ntwo\n"
    assert (tmp_path / "g").read_text() == "new\n"


def test_owner_names_come_from_the_instance(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nbuilder:x:4242:4243::/h:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nbuilders:x:4343:\n")
    assert ci.resolve_owner("builder:builders", str(tmp_path)) == (4242, 4343)
    assert ci.resolve_owner("builder", str(tmp_path)) == (4242, -1)
    assert ci.resolve_owner("1000:1001", str(tmp_path)) == (1000, 1001)
    with pytest.raises(KeyError, match="nobody"):
        ci.resolve_owner("nobody", str(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_write_files_owner(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("builder:x:4242:4243::/h:/bin/sh\n")
    (tmp_path / "etc/group").write_text("builders:x:4343:\n")
    ci.write_file({"path": "/f", "owner": "builder:builders"}, str(tmp_path))
    st = (tmp_path / "f").stat()
    assert (st.st_uid, st.st_gid, st.st_size) == (4242, 4343, 0)


def test_run_order_failures_and_first_boot(tmp_path, capsys):
    log = tmp_path / "log"
    plan = ci.parse(mime(
        ("cloud-config", "#cloud-config\n"
         f"bootcmd: [echo boot >> {log}]\n"
         "write_files: [{path: /w, content: \"written\\n\"}, {content: no path}]\n"
         f"runcmd: [cat {tmp_path}/w >> {log}, [sh, -c, 'echo run >> {log}; exit 3']]\n", None),
        ("x-shellscript", f"#!/bin/sh\necho part >> {log}\n", None)))
    assert ci.run(plan, str(tmp_path)) == 2  # the entry without a path, and runcmd's exit 3
    assert log.read_text() == "boot\npart\nwritten\nrun\n"
    ci.run(plan, str(tmp_path), first_boot=False)
    assert log.read_text() == "boot\npart\nwritten\nrun\nboot\n"
    out = capsys.readouterr().out
    assert "[cloudinit-lite] runcmd exited with 3" in out
    assert "[cloudinit-lite] write_files: None failed" in out

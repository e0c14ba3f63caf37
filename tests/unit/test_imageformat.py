"""The format inspector's check (saltami/imageformat.py) on images made here with qemu-img:
raw and qcow2 pass as what they are; a backing file, an external data file, content that
is not the claimed format, another format are refused with a message naming the file."""
import shutil
import subprocess

import pytest

from saltami import imageformat

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")


def qemu_img(*args):
    subprocess.run(["qemu-img", "create", "-q", *args], check=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("images")
    made = {name: tmp_path / name for name in ("plain.qcow2", "disk.raw", "gpt.raw", "backed.qcow2", "datafile.qcow2",
                                               "qcow2-named.raw", "raw-named.qcow2", "disk.vmdk", "disk.img")}
    qemu_img("-f", "qcow2", str(made["plain.qcow2"]), "8M")
    subprocess.run(["truncate", "-s", "8M", str(made["disk.raw"])], check=True)
    shutil.copy(made["disk.raw"], made["gpt.raw"])
    subprocess.run(["sfdisk", "--quiet", str(made["gpt.raw"])], input="label: gpt\n,,L\n", text=True, check=True)
    (tmp_path / "secret").write_text("the backing file's bytes would reach the image\n")
    qemu_img("-f", "qcow2", "-b", str(tmp_path / "secret"), "-F", "raw", str(made["backed.qcow2"]), "8M")
    qemu_img("-f", "qcow2", "-o", f"data_file={tmp_path / 'data.bin'}", str(made["datafile.qcow2"]), "8M")
    shutil.copy(made["plain.qcow2"], made["qcow2-named.raw"])
    shutil.copy(made["disk.raw"], made["raw-named.qcow2"])
    qemu_img("-f", "vmdk", str(made["disk.vmdk"]), "8M")
    shutil.copy(made["plain.qcow2"], made["disk.img"])
    return made


def test_raw_and_qcow2_pass_as_what_they_are(images):
    assert imageformat.check(str(images["plain.qcow2"]), "qcow2") == "qcow2"
    assert imageformat.check(str(images["disk.raw"]), "raw") == "raw"
    # a raw disk holding a GPT is raw
    assert imageformat.check(str(images["gpt.raw"]), "raw") == "raw"
    # without a claim the content says
    assert imageformat.check(str(images["disk.img"])) == "qcow2"


def test_claimed_by_name():
    assert imageformat.claimed_by_name("/x/debian.qcow2") == "qcow2"
    assert imageformat.claimed_by_name("/x/debian.RAW") == "raw"
    assert imageformat.claimed_by_name("/x/debian.img") is None


@pytest.mark.parametrize("name,claimed,words", [
    ("backed.qcow2", "qcow2", ["failed the format safety check", "backing_file: Image has a backing file"]),
    ("datafile.qcow2", None, ["failed the format safety check", "data_file: Image has data_file set"]),
    ("qcow2-named.raw", "raw", ["claims to be raw but its content is qcow2"]),
    ("raw-named.qcow2", "qcow2", ["claims to be qcow2 but its content is raw"]),
    ("disk.vmdk", None, ["is a vmdk image", "allowed: raw, qcow2"]),
    ("disk.raw", "vhd", ["format 'vhd' cannot be used", "allowed: raw, qcow2"]),
])
def test_unsafe_or_mislabelled_images_are_refused_naming_the_file(images, name, claimed, words):
    with pytest.raises(imageformat.UnsafeImage) as e:
        imageformat.check(str(images[name]), claimed, what="base image file")
    message = str(e.value)
    assert message.startswith(f"base image file {images[name]}")
    for w in words:
        assert w in message, message


def test_a_file_that_cannot_be_read_is_refused(tmp_path):
    with pytest.raises(imageformat.UnsafeImage, match="cannot be read: No such file"):
        imageformat.check(str(tmp_path / "none.raw"))

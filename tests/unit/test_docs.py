"""The reference docs build with Sphinx, warnings as errors, from the loader modules'
docstrings, the flavour schema and the build manifest's (docs/), and hold what a reader looks
for: each loader module's functions, every flavour key and every key of a build's manifest."""
import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from saltami import flavour
from saltami.pipeline import manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
                        "-d", str(out / "doctrees"), "docs", str(out / "html")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, f"sphinx-build -W failed:\n{r.stdout}{r.stderr}"
    return out / "html"


def text_of(site, page):
    return html.unescape(re.sub(r"<[^>]+>", "", (site / f"{page}.html").read_text()))


def documented(site, page):
    """The functions a page documents (autodoc's signatures)."""
    return set(re.findall(r'<span class="sig-name descname"><span class="pre">(\w+)</span>',
                          (site / f"{page}.html").read_text()))


def test_loader_modules_are_documented_from_their_docstrings(site):
    assert {"boot", "snapshot", "attach_volume", "upload_to_image", "upload_ami_triplet", "whoami", "bake",
            "scrub"} <= documented(site, "modules")
    assert {"present", "absent", "pruned"} <= documented(site, "states")
    assert {"build", "step", "cleanup", "status", "flavours"} <= documented(site, "runners")
    assert documented(site, "pillar") == {"ext_pillar"}
    # the CLI examples come along
    assert "salt-run ami.build flavour=debian-postgres" in text_of(site, "runners")


def test_every_loader_module_has_its_page():
    pages = "".join(path.read_text() for path in (REPO / "docs").glob("*.rst"))
    missing = [f"{folder}/{path.name}" for folder in ("_modules", "_states", "_runners", "_pillar")
               for path in sorted((REPO / folder).glob("*.py"))
               if f".. automodule:: {folder}.{path.stem}\n" not in pages]
    assert missing == [], "add an automodule for these to docs/modules.rst (or states, runners, pillar)"


def test_every_flavour_key_is_in_the_reference(site):
    text = text_of(site, "flavours")
    missing = [key for key in flavour.FIELDS if f"{key} (default: " not in text]
    assert missing == []
    for key in list(flavour.TEST_FIELDS) + list(flavour.BASE_FIELDS) + list(flavour.TIMEOUTS):
        assert f"{key} (default: " in text, key
    assert "keep (default: 3)" in text and "strategy (default: \"snapshot\")" in text
    # in pillar.example's words
    assert "Pruning keeps this many images of the flavour" in text


def test_every_manifest_key_is_in_the_reference(site):
    text = text_of(site, "manifest")
    missing = [key for key, entry in manifest.SCHEMA.items() if f"{key} ({entry.type}; written by " not in text]
    assert missing == []
    for key in ("steps", "resources", "outputs"):
        assert all(f"{name}: " in text for name in manifest.SCHEMA[key].keys), key

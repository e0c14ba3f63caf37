"""What pillar.example documents: each flavour key it shows, with the comment that says what the
key does, and the keys of the nested mappings (test, timeouts, base). The flavour reference
(flavour_schema.py) is made of it and of the schema in saltami/flavour/schema.py, and
tests/unit/test_pillar_example.py holds the two to each other.

A key's comment is the paragraph of comment lines right above it, at its indentation; keys
that follow each other with no blank line or comment between share the paragraph above the
first (min_disk and min_ram). A key shown in several places takes the worked example's (the
first flavour) comment, else that of ``ami:defaults``."""
import re
from pathlib import Path

import yaml

PATH = Path(__file__).resolve().parents[2] / "pillar.example"
KEY = re.compile(r"( *)([A-Za-z_][\w-]*):(\s|$)")
# where the keys of a flavour are: under ami:defaults, and under each ami:flavours:NAME
KEY_INDENT = {"defaults": 4, "flavours": 6}


def _paragraphs(text):
    """[(place, key, comment)] in file order; place is "defaults" or a flavour's name."""
    found, pending, group = [], [], None
    section = place = None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if not stripped:
            pending, group = [], None
            continue
        if stripped.startswith("#"):
            if indent == KEY_INDENT.get(section):
                # the text after "# ", its own indentation kept (examples in comments)
                pending.append(stripped[1:].removeprefix(" ").rstrip())
                group = None
            continue
        match = KEY.match(line)
        if not match:
            continue
        if indent == 2:
            section, place, pending, group = match[2], None, [], None
        elif section == "flavours" and indent == 4:
            place, pending, group = match[2], [], None
        elif indent == KEY_INDENT.get(section):
            if pending:
                group, pending = "\n".join(pending), []
            found.append((place or section, match[2], group or ""))
    return found


def load(path=PATH):
    """(ami mapping, {key: comment}) of pillar.example; a comment's lines are kept."""
    text = Path(path).read_text()
    ami = yaml.safe_load(text)["ami"]
    worked = next(iter(ami.get("flavours") or {}), None)
    comments = {}
    # weakest first: other flavours, the defaults, the worked example
    rank = {worked: 2, "defaults": 1}
    for place, key, comment in sorted(_paragraphs(text), key=lambda p: rank.get(p[0], 0)):
        if comment or key not in comments:
            comments[key] = comment
    return ami, comments


def flavour_keys(ami):
    """Every flavour key pillar.example sets, in ami:defaults or in a flavour."""
    layers = [ami.get("defaults") or {}] + list((ami.get("flavours") or {}).values())
    return {key for layer in layers for key in layer}


def nested_keys(ami, comments, key):
    """The keys of the mapping ``key`` that pillar.example sets or names (``sub:``) in key's comment."""
    layers = [ami.get("defaults") or {}] + list((ami.get("flavours") or {}).values())
    shown = {sub for layer in layers if isinstance(layer.get(key), dict) for sub in layer[key]}
    return shown | set(re.findall(r"\b([A-Za-z_]\w*):", comments.get(key, "")))

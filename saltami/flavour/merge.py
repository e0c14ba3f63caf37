"""Flavours from pillar ``ami``: each flavour merged from ``ami:defaults`` and the flavours it
``extends`` by the rules the package's docstring gives (see saltami/flavour/__init__.py), then
validated whole (schema.py); the names of the flavours; and the image families, the flavours
that build from their parent's newest promoted image (``from_parent``), in the order they
build. Nothing here talks to a cloud or to Salt: pillar comes in as a mapping.
"""
import functools
from collections.abc import Mapping

from ..errors import InvalidArgument, NotFound
from .canonical import _plain
from .problems import _bad, _describe, _suggest
from .schema import NAME_HELP, NAME_RE, _as_list, _unique, validate

# lists appended to the inherited one (a child adds SLS and tags), and a key that replaces
# the inherited value whole; every other key merges key by key
APPENDED = ("sls", "tags")
REPLACED = ("base",)
# a flavour's own keys: ami:defaults cannot hold them, and a child does not inherit them
OWN_KEYS = ("extends", "from_parent")


# ------------------------------------------------------------------------------ pillar
def _section(value, what):
    value = {} if value is None else _plain(value)
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a mapping, not {_describe(value)}")
    return value


def _flavours(pillar_ami):
    flavours = _section(_section(pillar_ami, "pillar ami").get("flavours"), "pillar ami:flavours")
    odd = [name for name in flavours if not isinstance(name, str)]
    if odd:
        raise _bad(f"pillar ami:flavours: flavour names must be strings; quote {', '.join(map(repr, odd))}")
    return flavours


def _defaults(pillar_ami):
    defaults = _section(_section(pillar_ami, "pillar ami").get("defaults"), "pillar ami:defaults")
    for key in OWN_KEYS:
        if key in defaults:
            raise _bad(f"pillar ami:defaults: key {key!r} cannot be a default: a flavour names its own "
                       "parent, and whether it builds from its parent's image")
    return defaults


def _layer(flavours, name):
    return _section(flavours[name], f"flavour {name!r}")


def _known(flavours):
    return ", ".join(sorted(flavours)) or "none"


def _lineage(flavours, name):
    """``name``, its parent, and so on up to the flavour that extends none."""
    lineage = [name]
    while (parent := _layer(flavours, lineage[-1]).get("extends")) is not None:
        child = lineage[-1]
        if not isinstance(parent, str) or not parent:
            raise _bad(f"flavour {child!r}: key 'extends': must be the name of a flavour, "
                       f"not {_describe(parent)}", f"flavours {_known(flavours)}")
        if parent in lineage:
            loop = lineage[lineage.index(parent):] + [parent]
            raise _bad(f"flavour {child!r}: key 'extends': inheritance loop {' -> '.join(loop)}")
        if parent not in flavours:
            raise _bad(f"flavour {child!r}: key 'extends': no flavour {parent!r}"
                       f"{_suggest(parent, flavours)}", f"known flavours {_known(flavours)}")
        lineage.append(parent)
    return lineage


def _append(inherited, own):
    if isinstance(inherited, (str, list)) and isinstance(own, (str, list)):
        return _unique(_as_list(inherited) + _as_list(own))
    return own


def _deep_merge(inherited, own):
    if isinstance(inherited, dict) and isinstance(own, dict):
        return {**inherited, **{key: _deep_merge(inherited.get(key), value) for key, value in own.items()}}
    return own


def _merge(inherited, own):
    """``own`` keys over ``inherited`` ones, by the rules in the module docstring."""
    merged = dict(inherited)
    for key, value in own.items():
        if key in APPENDED:
            merged[key] = _append(merged.get(key), value)
        elif key in REPLACED:
            merged[key] = value
        else:
            merged[key] = _deep_merge(merged.get(key), value)
    return merged



def names(pillar_ami):
    """The names of the flavours in pillar ``ami`` (the ``ami`` mapping), sorted."""
    return sorted(_flavours(pillar_ami))


def resolve(pillar_ami, name):
    """Flavour ``name`` of pillar ``ami`` (the ``ami`` mapping), merged with its defaults and
    ancestors and validated: every key present with its default filled in, ``base`` in
    ``glance.find_image``'s form, and ``name`` added. One InvalidArgument lists every problem."""
    flavours = _flavours(pillar_ami)
    if name not in flavours:
        raise NotFound(f"no flavour {name!r} in pillar ami:flavours{_suggest(name, flavours)} "
                       f"(known flavours: {_known(flavours)})")
    if not NAME_RE.fullmatch(name):
        raise _bad(f"flavour name {name!r} cannot be used: it goes into image names, minion ids "
                   f"and event tags", NAME_HELP)
    layers = [_layer(flavours, n) for n in reversed(_lineage(flavours, name))]
    merged = functools.reduce(_merge, layers, _defaults(pillar_ami))
    own = layers[-1]
    merged["from_parent"] = own.get("from_parent")   # not inherited
    if own.get("from_parent") is True:
        # the parent's image holds the parent's SLS (and the defaults'): this flavour's own only
        merged["sls"] = own.get("sls")
    return {"name": name, **validate(name, merged, own)}


def resolve_all(pillar_ami):
    """Every flavour, resolved: name -> flavour. One InvalidArgument lists the problems of
    all flavours."""
    flavours, problems = {}, []
    for name in names(pillar_ami):
        try:
            flavours[name] = resolve(pillar_ami, name)
        except InvalidArgument as e:
            problems.append(str(e))
    if problems:
        raise InvalidArgument("\n".join(problems))
    return flavours


# ------------------------------------------------------------------------------ image families
def image_parent(pillar_ami, name):
    """The flavour whose newest promoted image flavour ``name`` builds from (its own
    ``from_parent: true``, and the flavour it extends), else None. From the flavour as
    written: resolve says what is wrong with it."""
    flavours = _flavours(pillar_ami)
    layer = flavours.get(name)
    if not isinstance(layer, Mapping) or layer.get("from_parent") is not True:
        return None
    parent = layer.get("extends")
    return parent if isinstance(parent, str) and parent in flavours else None


def image_children(pillar_ami, name):
    """The flavours that build from flavour ``name``'s image, sorted."""
    return [child for child in names(pillar_ami) if image_parent(pillar_ami, child) == name]


def build_order(pillar_ami, wanted, with_parents=True):
    """The flavours ``wanted`` in the order they build: each after the flavour whose image it
    builds from, the others as given (several families side by side, level by level); with
    ``with_parents``, the image ancestors of each that ``wanted`` lacks come in before it.
    [(name, parent)]: parent is the flavour it builds from when that is in the list, else
    None."""
    parents, order = {}, []

    def add(name, seen=()):
        if name in parents or name in seen:  # (a loop of extends: resolve reports it)
            return
        parent = image_parent(pillar_ami, name)
        if parent is not None and with_parents:
            add(parent, (*seen, name))
        parents[name] = parent
        order.append(name)

    for name in wanted:
        add(name)

    def depth(name, seen=()):
        parent = parents.get(name)
        return 0 if parent not in parents or parent in seen else 1 + depth(parent, (*seen, name))

    return [(name, parents[name] if parents[name] in parents else None)
            for name in sorted(order, key=depth)]

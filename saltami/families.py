"""Image families: flavours built from their parent's newest promoted image (``from_parent:
true``). A family builds parents first (flavour.build_order), and says its statuses as a
tree: each flavour with the flavours built from its image (``children``), each out of date
while its parent is."""
from . import builds, flavour
from .errors import AmiError


def status(opts, pillar_ami, flavour_name, clients, _known=None):
    """builds.status of the flavour, with ``children``: the status of each flavour built from
    its image, by name, each with its own children (one that cannot be resolved: its
    ``error``). ``_known``: the statuses found so far, by flavour."""
    known = {} if _known is None else _known
    found = dict(builds.status(opts, pillar_ami, flavour_name, clients, known))
    found["children"] = {}
    for child in flavour.image_children(pillar_ami, flavour_name):
        try:
            found["children"][child] = status(opts, pillar_ami, child, clients, known)
        except AmiError as e:
            found["children"][child] = {"flavour": child, "error": str(e)}
    return found


def statuses(opts, pillar_ami, clients):
    """Every flavour's status as trees: each flavour built from no other's image, with its
    children (``status``); a flavour that cannot be resolved says why (``error``), and the
    others are told all the same."""
    known, trees = {}, {}
    for name in flavour.names(pillar_ami):
        if flavour.image_parent(pillar_ami, name) is None:
            try:
                trees[name] = status(opts, pillar_ami, name, clients, known)
            except AmiError as e:
                trees[name] = {"flavour": name, "error": str(e)}
    return trees


def names_in_order(pillar_ami, wanted):
    """The flavours ``wanted`` (None: every flavour) in the order they build, with the
    flavours whose image they build from."""
    return [name for name, _parent in flavour.build_order(
        pillar_ami, flavour.names(pillar_ami) if wanted is None else wanted)]


def build(opts, pillar_ami, flavour_name, clients):
    """builds.build of the flavour, after the builds of the flavours whose image it builds
    from, parents first (each finds its image up to date at its resolve, or makes it anew):
    the flavour's summary, with theirs under ``parents``. A parent's failure stops it, named."""
    order = names_in_order(pillar_ami, [flavour_name])
    parents = {}
    for name in order[:-1]:
        try:
            parents[name] = builds.build(opts, pillar_ami, name, clients)
        except AmiError as e:
            raise AmiError(f"flavour {flavour_name} not built: it builds from the image of {name}, "
                           f"whose build failed: {e}") from e
    summary = builds.build(opts, pillar_ami, flavour_name, clients)
    return {**summary, "parents": parents} if parents else summary


def build_all(opts, pillar_ami, wanted, clients, say=None):
    """The builds of the flavours ``wanted`` (None: every flavour) one after the other, parents
    first: ({name: summary, or {"error": why}}, [the names that failed]). A flavour whose
    parent failed is not built. ``say`` tells a person about a flavour refused before its
    build began (which has no events to say so)."""
    from .pipeline import StepFailed

    results, failed = {}, []
    for name, parent in flavour.build_order(pillar_ami, flavour.names(pillar_ami) if wanted is None else wanted):
        try:
            if parent in failed:
                raise AmiError(f"it builds from the image of {parent}, whose build failed")
            results[name] = builds.build(opts, pillar_ami, name, clients)
        except AmiError as e:
            results[name] = {"error": str(e)}
            failed.append(name)
            if say and not isinstance(e, StepFailed):
                say(f"[{name}] not built: {e}")
    return results, failed

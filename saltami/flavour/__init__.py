"""Image flavours: the recipes in pillar ``ami:flavours``, each a base image, the SLS applied
to it, and how the result is published.

    ami:
      defaults: {...}      # optional: keys every flavour inherits
      flavours:
        NAME: {...}

pillar.example documents every key. A flavour is merged from, weakest first: ``ami:defaults``,
the flavours it ``extends`` (the root first), then its own keys:

- mappings (``pillar``, ``properties``, ``test``, ``timeouts``...) merge key by key,
  recursively; the child's value wins;
- lists replace the inherited list, except ``sls`` and ``tags``, which are appended to it
  (duplicates dropped, first position kept): a child adds SLS, it cannot remove one;
- ``base`` replaces the inherited base whole: merging two image filters would silently
  require both to match;
- a key set to null drops the inherited value, so the key's default applies.

``extends`` and ``from_parent`` are a flavour's own, never inherited nor defaults. A flavour
with ``from_parent: true`` builds from its parent's newest promoted image (an image family):
its ``sls`` are its own only (the parent's image holds the parent's already), and its base is
that image, found by the build (``provenance.parent_image``), whatever ``base`` says.

The merged flavour is validated as a whole and every problem is reported in one error.
Nothing here talks to a cloud or to Salt: whether the SLS exist is asked of the master's
file server through ``check_sls``.

The package's parts, by concern:

- merge.py: the flavours of pillar ``ami``, each merged by the rules above (``resolve``,
  ``resolve_all``, ``names``), and the image families (``image_parent``, ``image_children``,
  ``build_order``);
- schema.py: every key with its default and its check (``FIELDS``), the rules across keys,
  ``validate`` of a merged flavour and ``check_sls``;
- imagename.py: the ``image_name`` pattern and the name it gives a build (``render_name``);
- canonical.py: ``canonical_hash``, the build's ``fingerprint`` and the flavour keys in it
  (``image_settings``);
- problems.py: how a problem is worded.

Only schema.py imports other parts of saltami than errors: the visibilities Glance accepts
(cloud/glance.py) and the vanilla releases (vanilla.py), where they are defined. What callers
use is imported here: ``from saltami import flavour`` then ``flavour.resolve(...)``.
"""
from .canonical import canonical_hash, fingerprint, image_settings
from .imagename import render_name
from .merge import build_order, image_children, image_parent, names, resolve, resolve_all
from .schema import (
    BASE_FIELDS,
    FIELDS,
    LOCAL_BASE_KEYS,
    PRUNE_SHARED,
    RESERVED_PREFIX,
    STRATEGIES,
    TEST_FIELDS,
    TIMEOUTS,
    check_sls,
    is_local_base,
)

__all__ = [
    "BASE_FIELDS", "FIELDS", "LOCAL_BASE_KEYS", "PRUNE_SHARED", "RESERVED_PREFIX", "STRATEGIES", "TEST_FIELDS",
    "TIMEOUTS", "build_order", "canonical_hash", "check_sls", "fingerprint", "image_children", "image_parent",
    "image_settings", "is_local_base", "names", "render_name", "resolve", "resolve_all",
]

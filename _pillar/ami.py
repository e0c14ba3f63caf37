"""The ``ami`` ext_pillar: the minions of a running build (its builder and its validator) get
the pillar of the build's flavour (``ami:flavours:<name>:pillar`` of the master's pillar) and
``ami:build``, the build's id; every other minion gets nothing from it.

Master config:

.. code-block:: yaml

    ext_pillar:
      - ami: {}

Thin over ``saltami.build_pillar``.
"""
import logging

try:
    from saltami import build_pillar
    from saltami.errors import AmiError

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

log = logging.getLogger(__name__)

__virtualname__ = "ami"


def __virtual__():
    if not HAS_LIBS:
        return False, f"the ami ext_pillar needs the salt-ami library: {_MISSING}"
    return __virtualname__


def ext_pillar(minion_id, pillar, **kwargs):  # pylint: disable=unused-argument
    """
    The flavour's pillar for a build's builder or validator minion, nothing for others.

    CLI Example (what a builder gets):

    .. code-block:: bash

        salt ami-builder-debian-postgres-20261121-101500-a1b2c3 pillar.items
    """
    try:
        return build_pillar.served(__opts__, minion_id)
    except AmiError as e:
        # the build then fails at its SLS (build_pillar.ensure), saying the pillar is missing
        log.error("ami ext_pillar: no pillar for minion %s: %s", minion_id, e)
        return {}

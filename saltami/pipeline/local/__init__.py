"""The local provider's variant of the validate step: it boots the build's first output under
qemu on this machine, where the step of the same name in the package above boots a server of
the candidate image in the cloud. It keeps its step's NAME, so that a build's events,
manifest and ``validate: false`` (which drops the steps named validate) treat both alike; a
plan names it by module (``local.validate``)."""
from . import validate

__all__ = ["validate"]

"""The chroot variants of the provision and scrub steps: they run in the build's disk as the
mount step mounted it (a volume attached to this machine, or the local provider's loop
device), where the steps of the same name in the package above run on a booted builder.
Each keeps its step's NAME, so that a build's events, manifest and states say provision and
scrub whichever variant ran; a plan names them by module (``chroot.provision``)."""
from . import provision, scrub

__all__ = ["provision", "scrub"]

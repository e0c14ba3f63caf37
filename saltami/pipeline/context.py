"""What every step gets: the cloud, the master, the flavour, and the event bus; and the
cleanup of a build of the flavour by its manifest (claims.py's, of an abandoned build)."""
import contextlib
import logging
import os

from .. import pipeline, report

log = logging.getLogger(__name__)

# who, in this process, hears the events of its builds besides the bus (``listening``)
_LISTENERS = []


@contextlib.contextmanager
def listening(listener):
    """``listener(tag, data)`` hears every event this process's builds fire, for the block:
    how ``salt-run ami.build`` and ``salt-call --local ami.bake`` print a build's progress
    where it runs (a bake without a master has no bus to read it back from)."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


class Context:
    def __init__(self, clients, master, spec, builds_dir):
        self.clients = clients
        self.master = master
        self.spec = spec
        self.builds_dir = builds_dir

    def cleanup(self, build):
        """Undo what ``build``, a build of this flavour, made: the steps its manifest names."""
        return pipeline.cleanup(build, self, pipeline.steps_of(build, self.spec["strategy"]))

    @property
    def cachedir(self):
        """Where builds keep what outlives one build (salt-thin, base images): beside the
        build manifests."""
        return os.path.dirname(self.builds_dir)

    def event(self, build, step, data):
        """salt/ami/<flavour>/<step> on the master's bus."""
        self.fire(f"salt/ami/{build.data['flavour']}/{step}", {"build": build.id, **data})

    def fire(self, tag, data):
        self.master.fire(tag, data)
        for listener in list(_LISTENERS):
            try:
                listener(tag, data)
            except Exception as e:  # what prints the progress must not fail the build
                log.warning("progress listener failed on %s: %s", tag, e)

    def transfer(self, build, name):
        """A ``progress`` callback for the library's transfers of this build (glance.upload):
        salt/ami/transfer/<name> events with the build, the bytes and the rate."""
        return report.transfer_progress(self.fire, f"salt/ami/transfer/{name}", name,
                                        {"build": build.id, "flavour": build.data["flavour"]})

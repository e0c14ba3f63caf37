"""What every step gets: the cloud, the master, the flavour, and the event bus."""
import os


class Context:
    def __init__(self, clients, master, spec, builds_dir):
        self.clients = clients
        self.master = master
        self.spec = spec
        self.builds_dir = builds_dir

    @property
    def cachedir(self):
        """Where builds keep what outlives one build (salt-thin, base images): beside the
        build manifests."""
        return os.path.dirname(self.builds_dir)

    def event(self, build, step, data):
        """salt/ami/<flavour>/<step> on the master's bus."""
        self.master.fire(f"salt/ami/{build.data['flavour']}/{step}", {"build": build.id, **data})

"""Salt's ``salt.loader`` entry point. The loader modules live once, in the top-level
_modules/, _states/, _runners/, _pillar/ and _output/ (the runner's progress outputter);
saltami/_modules (and friends) link to them in a checkout and are real copies once the
package is built; salt/formulas/_modules links to them for saltutil.sync_all from file_roots."""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def loader_dirs():
    return {"modules": [str(HERE / "_modules")], "states": [str(HERE / "_states")],
            "runners": [str(HERE / "_runners")], "pillar": [str(HERE / "_pillar")],
            "output": [str(HERE / "_output")]}

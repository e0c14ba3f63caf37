"""docs/benchmarks.md is made of sections, one per benchmark, each rewritten by its own
benchmark between <!-- bench:NAME --> and <!-- /bench:NAME --> with the date and machine."""
import datetime
import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nFigures from real runs of the scripts in bench/, each section written by its "
          "script. These machines are shared and noisy: compare ratios within one section, not "
          "absolute numbers across sections.\n")


def machine():
    mem = int(open("/proc/meminfo").read().split()[1]) // 2**20
    return f"{os.cpu_count()} cores, {mem} GiB, Linux {platform.release()}, Python {platform.python_version()}"


def write_section(name, title, body, command=None):
    """Replace (or append) section ``name`` of docs/benchmarks.md; ``command`` is how to re-run
    it (default ``python bench/NAME.py``)."""
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- bench:{name} -->\n## {title}\n\n"
               f"_{when}; {machine()}; `{command or f'python bench/{name}.py'}`_\n\n"
               f"{body.strip()}\n<!-- /bench:{name} -->")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda m: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)
    print(section)

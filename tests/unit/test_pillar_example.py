"""pillar.example and the flavour schema (saltami/flavour/schema.py) are one: every key of the schema
is shown and explained in pillar.example, and pillar.example shows no key the schema lacks.
The reference docs' flavour page is made of both (docs/_ext/flavour_schema.py)."""
import importlib.util
from pathlib import Path

import pytest

from saltami import flavour

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("pillar_example", REPO / "docs" / "_ext" / "pillar_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pillar_example = _load()


@pytest.fixture(scope="module")
def example():
    return pillar_example.load(REPO / "pillar.example")


def _drift(schema, shown, where):
    """What one place lacks of the other, said so that the fix is plain."""
    missing, unknown = sorted(set(schema) - set(shown)), sorted(set(shown) - set(schema))
    return ([f"pillar.example lacks {where} keys of the schema: {', '.join(missing)}"] if missing else []) + \
        ([f"pillar.example has {where} keys the schema lacks: {', '.join(unknown)}"] if unknown else [])


def test_every_flavour_key_is_in_pillar_example_and_only_those(example):
    ami, comments = example
    shown = pillar_example.flavour_keys(ami)
    problems = _drift(flavour.FIELDS, shown, "flavour (saltami/flavour/schema.py FIELDS)")
    unexplained = sorted(key for key in shown & set(flavour.FIELDS) if not comments.get(key))
    if unexplained:
        problems.append(f"pillar.example shows these keys with no comment above them: {', '.join(unexplained)}")
    assert not problems, "\n".join(problems)


def test_the_nested_keys_too(example):
    ami, comments = example
    timeouts = {key for layer in [ami.get("defaults") or {}, *ami["flavours"].values()]
                for key in (layer.get("timeouts") or {})}
    problems = _drift(flavour.TIMEOUTS, timeouts, "timeouts (saltami/flavour/schema.py TIMEOUTS)")
    # test and base are explained in their comments (sub: what it does), and partly set
    for key, schema in (("test", flavour.TEST_FIELDS), ("base", {**flavour.BASE_FIELDS,
                                                               **dict.fromkeys(flavour.LOCAL_BASE_KEYS)})):
        missing = sorted(set(schema) - pillar_example.nested_keys(ami, comments, key))
        if missing:
            problems.append(f"pillar.example does not name these {key} keys (as '{missing[0]}: ...' in the comment "
                            f"above {key}, or set): {', '.join(missing)}")
        unknown = sorted({sub for layer in [ami.get("defaults") or {}, *ami["flavours"].values()]
                          if isinstance(layer.get(key), dict) for sub in layer[key]} - set(schema))
        if unknown:
            problems.append(f"pillar.example sets {key} keys the schema lacks: {', '.join(unknown)}")
    assert not problems, "\n".join(problems)


def test_pillar_example_is_a_valid_pillar(example):
    ami, _comments = example
    assert sorted(flavour.resolve_all(ami)) == flavour.names(ami)

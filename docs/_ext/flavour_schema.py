"""The ``flavour-schema`` directive: the reference of every flavour key, from the schema
(saltami/flavour/schema.py: FIELDS, TEST_FIELDS, BASE_FIELDS, TIMEOUTS, with their defaults) and
the comment that explains it in pillar.example (pillar_example.py), so that the docs say what
the code accepts in the words of the example users copy.

    .. flavour-schema::
"""
import json

from docutils import nodes
from docutils.parsers.rst import Directive

import pillar_example


def _default(value):
    from saltami.flavour import schema

    if isinstance(value, schema._Required):
        return "required"
    if value is None:
        return "none"
    return json.dumps(value, default=str)


def _explanation(text):
    """A comment's lines: prose as paragraphs, indented lines (examples) as literal blocks."""
    body, prose, example = [], [], []

    def flush():
        if prose:
            body.append(nodes.paragraph(text=" ".join(prose)))
            prose.clear()
        if example:
            body.append(nodes.literal_block(text="\n".join(example)))
            example.clear()

    for line in text.splitlines():
        if line.startswith(" "):
            if prose:
                flush()
            example.append(line)
        else:
            if example:
                flush()
            prose.append(line.strip())
    flush()
    return body or [nodes.paragraph(text="")]


def definition_item(key, note, body):
    """A definition list's item: ``key`` (as code) and ``note`` (text), then the ``body`` nodes
    (manifest_schema.py's too)."""
    term = nodes.term()
    term += nodes.literal(text=key)
    term += nodes.Text(f" ({note})")
    definition = nodes.definition()
    definition.extend(body)
    item = nodes.definition_list_item()
    item += term
    item += definition
    return item


def _entry(key, default, text):
    return definition_item(key, f"default: {default}", _explanation(text))


class FlavourSchema(Directive):
    has_content = False

    def run(self):
        from saltami.flavour import schema

        ami, comments = pillar_example.load()
        self.state.document.settings.record_dependencies.add(str(pillar_example.PATH))
        keys = nodes.definition_list()
        for key, (default, _check) in schema.FIELDS.items():
            keys += _entry(key, _default(default), comments.get(key, ""))
        sections = [keys]
        for title, fields in (("test", schema.TEST_FIELDS), ("base (as a mapping)", schema.BASE_FIELDS),
                              ("timeouts (seconds)", {k: (v, None) for k, v in schema.TIMEOUTS.items()})):
            nested = nodes.bullet_list()
            for key, (default, _check) in fields.items():
                line = nodes.paragraph()
                line += [nodes.literal(text=key), nodes.Text(f" (default: {_default(default)})")]
                nested += nodes.list_item("", line)
            sections += [nodes.rubric(text=f"Keys of {title}"), nested]
        return sections


def setup(app):
    app.add_directive("flavour-schema", FlavourSchema)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""The ``build-manifest`` directive: every key of a build's manifest, from its schema
(saltami/pipeline/manifest.py: SCHEMA), with its type, what writes it, what it means and the
keys of what it holds.

    .. build-manifest::
"""
from docutils import nodes
from docutils.parsers.rst import Directive

from flavour_schema import definition_item


def _entry(key, entry):
    body = [nodes.paragraph(text=entry.meaning[:1].upper() + entry.meaning[1:] + ".")]
    if entry.keys:
        held = nodes.bullet_list()
        for name, text in entry.keys.items():
            line = nodes.paragraph()
            line += [nodes.literal(text=name), nodes.Text(f": {text}")]
            held += nodes.list_item("", line)
        body.append(held)
    return definition_item(key, f"{entry.type}; written by {entry.by}", body)


class BuildManifest(Directive):
    has_content = False

    def run(self):
        from saltami.pipeline import manifest

        self.state.document.settings.record_dependencies.add(manifest.__file__)
        keys = nodes.definition_list()
        for key, entry in manifest.SCHEMA.items():
            keys += _entry(key, entry)
        return [keys]


def setup(app):
    app.add_directive("build-manifest", BuildManifest)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

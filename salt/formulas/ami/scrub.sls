{#-
  salt <builder> state.apply ami.scrub

  The last state a builder runs before it is snapshotted: removes what must not be in the
  golden image (saltami/scrub.py, which scrub.py here links to) from the minion's own root.
  Builders have salt but not the salt-ami library, so the file runs as a script with their
  python3; it exits non-zero when anything could not be scrubbed, which fails the state.
  Pillar ami:scrub:trim (default true): fstrim (or zero-fill) the free space afterwards;
  ami:scrub:salt (the flavour's `salt`, which the scrub step passes): disable, keep or remove.
  On a builder that runs systemd, the scrub also arms a scrub at its shutdown.
-#}
{%- set trim = salt['pillar.get']('ami:scrub:trim', True) %}
{%- set salt_in_image = salt['pillar.get']('ami:scrub:salt', 'disable') %}
ami-scrub:
  cmd.script:
    - source: salt://ami/scrub.py
    - args: --root / --json --salt {{ salt_in_image }}{{ '' if trim else ' --no-trim' }}

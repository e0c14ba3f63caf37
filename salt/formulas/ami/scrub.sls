{#-
  salt <builder> state.apply ami.scrub

  The last state a builder runs before it is snapshotted: removes what must not be in the
  golden image (saltami/scrub.py, which scrub.py here links to) from the minion's own root.
  Builders have salt but not the salt-ami library, so the file runs as a script with their
  python3; it exits non-zero when anything could not be scrubbed, which fails the state.
  Pillar ami:scrub:trim (default true): fstrim (or zero-fill) the free space afterwards.
-#}
{%- set trim = salt['pillar.get']('ami:scrub:trim', True) %}
ami-scrub:
  cmd.script:
    - source: salt://ami/scrub.py
    - args: --root / --json{{ '' if trim else ' --no-trim' }}

{#-
  salt-run state.orch ami.build pillar='{"ami": {"flavour": "debian-postgres"}}'
  salt-run state.orch ami.build pillar='{"ami": {"flavour": [web, db]}}'   (these, side by side)
  salt-run state.orch ami.build                  (every flavour, side by side)

  One flavour: one state per build step (ami.step), so that the orchestration's output shows
  each step with what it did and its duration and, on failure, the failing step and its
  reason; the cleanup state (ami.cleanup) then undoes what the build made. Each step needs the
  one before it, and the changes of resolve: when the flavour's image is up to date, resolve
  has none and no other step runs. Flavours come from pillar ami:flavours (pillar.example).

  Several flavours: one orchestration of this file for each, side by side (parallel), so that
  each flavour goes through its steps at its own pace, never waiting for another's step (the
  state engine waits in order for a state's requisites: steps of several flavours in one
  orchestration would go at the pace of the slowest at every step).

  Image families (a flavour with from_parent: true builds from its parent's newest image):
  flavours come parents first (ami.plan), a parent that was not asked for too (unless
  pillar ami:with_parents is false, as in the orchestration of each flavour, whose parents
  are states of this one); each child's orchestration requires its parent's, so it
  starts once its parent's is done (parallel states honour require), and a parent's failure
  fails its children, the requisite's failure naming the parent's state. A lone flavour with
  no family keeps the layout of one state per step.

  With test=True (a dry run) every flavour's steps are laid out here, whatever their number:
  the resolve state of each says whether it would build and why, what it would create and
  prune (a nested orchestration would only say that it would run).
-#}
{%- set ami = pillar.get('ami', {}) %}
{%- set plans = salt['ami.plan'](ami, flavour=ami.get('flavour'), with_parents=ami.get('with_parents', True)) %}
{%- if plans | length > 1 and not opts.test %}
{%- for plan in plans %}
ami-{{ plan.flavour }}:
  salt.runner:
    - name: state.orchestrate
    - mods: ami.build
    - pillar: {"ami": {"flavour": {{ plan.flavour | json }}, "with_parents": false}}
    - parallel: True
{%- if plan.parent %}
    - require:
      - salt: ami-{{ plan.parent }}
{%- endif %}
{%- endfor %}
{%- else %}
{%- for plan in plans %}
{%- for step in plan.steps %}
ami-{{ plan.flavour }}-{{ step }}:
  ami.step:
    - name: {{ step }}
    - flavour: {{ plan.flavour }}
    - build: {{ plan.build }}
    - owner: {{ plan.owner | json }}
{%- if not loop.first %}
    - require:
      - ami: ami-{{ plan.flavour }}-{{ loop.previtem }}
    - onchanges:
      - ami: ami-{{ plan.flavour }}-{{ plan.steps[0] }}
{%- endif %}
{%- endfor %}

ami-{{ plan.flavour }}-cleanup:
  ami.cleanup:
    - name: {{ plan.build }}
    - onfail_any:
{%- for step in plan.steps %}
      - ami: ami-{{ plan.flavour }}-{{ step }}
{%- endfor %}
{%- endfor %}
{%- endif %}

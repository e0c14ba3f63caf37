{#-
  salt-run state.orch ami.build pillar='{"ami": {"flavour": "debian-postgres"}}'
  salt-run state.orch ami.build pillar='{"ami": {"flavour": [web, db]}}'   (these, in parallel)
  salt-run state.orch ami.build                  (every flavour, in parallel)

  One state per build step, so the orchestration's output shows each step with its duration
  and, on failure, the failing step and its reason; the cleanup state then undoes what the
  build made. Flavours come from pillar ami:flavours (see pillar.example).

  Several flavours run side by side: the states are laid out step by step (every flavour's
  resolve, then every flavour's boot...), each parallel, so that the state engine, which
  waits in order for a state's requisites, starts one flavour's step while another's runs.
-#}
{%- set ami = pillar.get('ami', {}) %}
{%- set plans = salt['ami.plan'](ami, flavour=ami.get('flavour')) %}
{%- set depth = plans | map(attribute='steps') | map('length') | max %}
{%- for i in range(depth) %}
{%- for plan in plans if i < plan.steps | length %}
ami-{{ plan.flavour }}-{{ plan.steps[i] }}:
  salt.runner:
    - name: ami.step
    - step: {{ plan.steps[i] }}
    - flavour: {{ plan.flavour }}
    - build: {{ plan.build }}
    - owner: {{ plan.owner | json }}
{%- if plans | length > 1 %}
    - parallel: True
{%- endif %}
{%- if i > 0 %}
    - require:
      - salt: ami-{{ plan.flavour }}-{{ plan.steps[i - 1] }}
{%- endif %}
{%- endfor %}
{%- endfor %}
{%- for plan in plans %}

ami-{{ plan.flavour }}-cleanup:
  salt.runner:
    - name: ami.cleanup
    - build: {{ plan.build }}
    - onfail_any:
{%- for step in plan.steps %}
      - salt: ami-{{ plan.flavour }}-{{ step }}
{%- endfor %}
{%- endfor %}

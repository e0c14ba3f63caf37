{#-
  salt-run state.orch ami.build pillar='{"ami": {"flavour": "debian-postgres"}}'
  salt-run state.orch ami.build                  (every flavour, in parallel)

  One state per build step, so the orchestration's output shows each step with its duration
  and, on failure, the failing step and its reason; the cleanup state then undoes what the
  build made. Flavours come from pillar ami:flavours (see pillar.example).
-#}
{%- set ami = pillar.get('ami', {}) %}
{%- set plans = salt['ami.plan'](ami, flavour=ami.get('flavour')) %}
{%- for plan in plans %}
{%- set prefix = 'ami-' ~ plan.flavour %}
{%- for step in plan.steps %}
{{ prefix }}-{{ step }}:
  salt.runner:
    - name: ami.step
    - step: {{ step }}
    - flavour: {{ plan.flavour }}
    - build: {{ plan.build }}
{%- if plans | length > 1 %}
    - parallel: True
{%- endif %}
{%- if not loop.first %}
    - require:
      - salt: {{ prefix }}-{{ loop.previtem }}
{%- endif %}
{%- endfor %}

{{ prefix }}-cleanup:
  salt.runner:
    - name: ami.cleanup
    - build: {{ plan.build }}
    - onfail_any:
{%- for step in plan.steps %}
      - salt: {{ prefix }}-{{ step }}
{%- endfor %}
{%- endfor %}

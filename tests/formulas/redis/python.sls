# -*- coding: utf-8 -*-
# vim: ft=sls
# The Python bindings (import redis), on the interpreter of the python formula, with the
# connection settings of this host's server for applications to load.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}
{%- from tplroot ~ "/libtofs.jinja" import files_switch with context %}

include:
  - python
  - {{ tplroot }}.client

redis-python-package:
  pkg.installed:
    - name: {{ redis.pkg.python }}
    - require:
      - sls: python
{%- if redis.repo.get('url') %}
      - pkgrepo: redis-repo
{%- endif %}

redis-python-settings:
  file.managed:
    - name: {{ redis.python.settings }}
    - source: {{ files_switch(['python-client.json.jinja'], lookup='redis-python-settings') }}
    - template: jinja
    - makedirs: True
    - mode: '0644'
    - context:
        python: {{ redis.python | json }}
        socket: {{ redis.settings.unixsocket | json }}
    # an overriding template must still give JSON: salt's own JSON renderer reads it
    - check_cmd: salt-call --local --retcode-passthrough --out=quiet slsutil.renderer default_renderer=json
    - require:
      - pkg: redis-python-package

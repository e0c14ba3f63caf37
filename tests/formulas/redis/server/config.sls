# -*- coding: utf-8 -*-
# vim: ft=sls
# redis.conf (and one per extra instance) from the map; a change restarts the server.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}
{%- from tplroot ~ "/libtofs.jinja" import files_switch with context %}

include:
  - .package
  - .service

# the server rewrites its ACL file itself (ACL SAVE, with its own mode): made once, empty,
# and left to it
redis-server-aclfile:
  cmd.run:
    - name: install -m {{ redis.config.mode }} -o {{ redis.user }} -g {{ redis.group }} /dev/null {{ redis.settings.aclfile }}
    - creates: {{ redis.settings.aclfile }}
    - require:
      - pkg: redis-server-package

redis-server-config:
  file.managed:
    - name: {{ redis.config.path }}
    - source: {{ files_switch(['redis.conf.jinja'], lookup='redis-server-config') }}
    - template: jinja
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - mode: {{ redis.config.mode }}
    - context:
        settings: {{ redis.settings | json }}
    - require:
      - pkg: redis-server-package
      - cmd: redis-server-aclfile
    - watch_in:
      - service: redis-server

{%- for name, instance in redis.instances_resolved | dictsort %}

redis-server-{{ name }}-aclfile:
  cmd.run:
    - name: install -m {{ redis.config.mode }} -o {{ redis.user }} -g {{ redis.group }} /dev/null {{ instance.settings.aclfile }}
    - creates: {{ instance.settings.aclfile }}
    - require:
      - pkg: redis-server-package

redis-server-{{ name }}-config:
  file.managed:
    - name: {{ instance.config }}
    - source: {{ files_switch(['redis.conf.jinja'], lookup='redis-server-instance-config') }}
    - template: jinja
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - mode: {{ redis.config.mode }}
    - context:
        settings: {{ instance.settings | json }}
    - require:
      - pkg: redis-server-package
      - cmd: redis-server-{{ name }}-aclfile
    - watch_in:
      - service: redis-server-{{ name }}
{%- endfor %}

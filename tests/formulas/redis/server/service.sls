# -*- coding: utf-8 -*-
# vim: ft=sls
# The server, and each extra instance (a systemd template unit), running and enabled at boot.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}

include:
  - .package

redis-server:
  service.running:
    - name: {{ redis.service.name }}
    - enable: {{ redis.service.enable }}
    - require:
      - pkg: redis-server-package

{%- for name, instance in redis.instances_resolved | dictsort %}

redis-server-{{ name }}:
  service.running:
    - name: {{ instance.service }}
    - enable: {{ instance.get('enable', True) }}
    - require:
      - pkg: redis-server-package
{%- endfor %}

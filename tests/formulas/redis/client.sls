# -*- coding: utf-8 -*-
# vim: ft=sls
# redis-cli, with a system-wide rc file (hints) and no history file for root's secrets.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}
{%- from tplroot ~ "/libtofs.jinja" import files_switch with context %}

include:
  - .repo

redis-client-package:
  pkg.installed:
    - name: {{ redis.pkg.client }}
{%- if redis.repo.get('url') %}
    - require:
      - pkgrepo: redis-repo
{%- endif %}

redis-client-rc:
  file.managed:
    - name: {{ redis.client.rcfile }}
    - source: {{ files_switch(['redisclirc.jinja'], lookup='redis-client-rc') }}
    - template: jinja
    - makedirs: True
    - mode: '0644'
    - context:
        client: {{ redis.client | json }}
        socket: {{ redis.settings.unixsocket | json }}
    - require:
      - pkg: redis-client-package

redis-client-profile:
  file.managed:
    - name: {{ redis.client.profile }}
    - source: {{ files_switch(['redis-cli.sh.jinja'], lookup='redis-client-profile') }}
    - template: jinja
    - mode: '0644'
    - context:
        client: {{ redis.client | json }}
        socket: {{ redis.settings.unixsocket | json }}

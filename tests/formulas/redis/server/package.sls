# -*- coding: utf-8 -*-
# vim: ft=sls
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}

include:
  - {{ tplroot }}.repo

redis-server-package:
  pkg.installed:
    - name: {{ redis.pkg.server }}
{%- if redis.repo.get('url') %}
    - require:
      - pkgrepo: redis-repo
{%- endif %}

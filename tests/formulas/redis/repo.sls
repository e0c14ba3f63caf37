# -*- coding: utf-8 -*-
# vim: ft=sls
# The package repository redis comes from, when pillar names one (redis:repo).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}
{%- set repo = redis.repo %}

{%- if repo.get('url') %}
redis-repo:
  pkgrepo.managed:
  {%- if grains.os_family == 'Debian' %}
    - name: deb [signed-by={{ repo.get('keyring', '/usr/share/keyrings/debian-archive-keyring.gpg') }}] {{ repo.url }} {{ repo.get('dist', grains.oscodename) }} {{ repo.get('comps', ['main']) | join(' ') }}
    - file: {{ repo.get('file', '/etc/apt/sources.list.d/redis.list') }}
  {%- else %}
    - name: redis
    - humanname: redis
    - baseurl: {{ repo.url }}
    - gpgcheck: 1
    {%- if repo.get('key_url') %}
    - gpgkey: {{ repo.key_url }}
    {%- endif %}
  {%- endif %}
    - refresh: True
{%- endif %}

# -*- coding: utf-8 -*-
# vim: ft=sls
# The ACL users of pillar redis:users, set in the running server, which saves them to its ACL
# file: the server must run. Where nothing started it yet (a first boot before systemd got to
# it, a container, an image being built), it is started here as its unit would start it.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import redis with context %}
{%- set socket = redis.settings.unixsocket %}
{%- set cli = redis.cli ~ ' -s ' ~ socket %}

include:
  - .service

{%- if redis.users %}
redis-server-users:
  cmd.run:
    - name: |
        set -e
        if ! {{ cli }} ping >/dev/null 2>&1; then
          install -d -o {{ redis.user }} -g {{ redis.group }} -m 2775 {{ socket.rsplit('/', 1)[0] }}
          runuser -u {{ redis.user }} -- {{ redis.bin }} {{ redis.config.path }} --daemonize yes
          for i in $(seq 100); do {{ cli }} ping >/dev/null 2>&1 && break; sleep 0.1; done
        fi
        {%- for name, user in redis.users | dictsort %}
        {{ cli }} ACL SETUSER {{ name }} reset
        {%- for rule in user.rules.split() %} {{ rule | quote }}{% endfor %}
        {%- for hash in user.get('password_sha256', []) %} '#{{ hash }}'{% endfor %} >/dev/null
        {%- endfor %}
        test "$({{ cli }} ACL SAVE)" = OK
    - unless:
      {%- for name in redis.users | sort %}
      - {{ cli }} ACL GETUSER {{ name }} | grep -q .
      {%- endfor %}
    - require:
      - service: redis-server
{%- endif %}

# A formula for the build tests: it needs no package download (the test base image has no
# network), and every state shows in the image: a file, a user, a program.
{%- set mark = salt['pillar.get']('amitest:mark', 'baked') %}

/etc/ami-test/flavour:
  file.managed:
    - contents: {{ mark | yaml_encode }}
    - makedirs: True
    - mode: '0644'

amitest:
  user.present:
    - shell: /bin/sh
    - createhome: True

/usr/local/bin/amitest-hello:
  file.managed:
    - mode: '0755'
    - contents: |
        #!/bin/sh
        printf '%s\n' {{ mark | quote }}

# what the builder's pillar holds of the master's top file: the tests' top gives every minion
# the flavours, and a build's minions get none of it (unless a flavour says master_pillar)
/etc/ami-test/top-pillar:
  file.managed:
    - contents: "{{ salt['pillar.get']('ami:flavours', {}) | length }}"
    - mode: '0644'

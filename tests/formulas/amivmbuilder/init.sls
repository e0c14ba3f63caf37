# A builder image for the volume bake on real guests (tests/integration/test_real_guests.py):
# the guest image with salt-ami and its OpenStack clients installed in its salt, from wheels
# the test serves in the file tree (pillar amivmbuilder:packages names them).
/tmp/amivmbuilder-wheels:
  file.recurse:
    - source: salt://amivmbuilder-wheels

amivmbuilder-salt-ami:
  cmd.run:
    - name: >-
        /opt/salt/bin/pip install --quiet --no-index --root-user-action=ignore
        --find-links /tmp/amivmbuilder-wheels {{ salt['pillar.get']('amivmbuilder:packages', []) | join(' ') }}
        && rm -rf /tmp/amivmbuilder-wheels
    - unless: /opt/salt/bin/python3 -c 'import saltami'
    - require:
      - file: /tmp/amivmbuilder-wheels

# For the builds on real guests (tests/integration/test_real_guests.py): a service that the
# guest's systemd starts, and a secret written to the disk and deleted again, as installers
# and build tools do: discard is ignored there, so only the build's zero-fill clears it.
# Every state is idempotent: the validator re-applies this with test=True and no changes.

/etc/systemd/system/amiguest-http.service:
  file.managed:
    - contents: |
        [Unit]
        Description=salt-ami test service of a real guest
        After=network.target
        [Service]
        ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 8099 --directory /etc/ami-test
        [Install]
        WantedBy=multi-user.target

amiguest-http:
  service.running:
    - enable: True
    - watch:
      - file: /etc/systemd/system/amiguest-http.service

# the secret goes through the environment, never into a state's name (which the job's return,
# and so the master's event bus, carries)
amiguest-secret-written-then-deleted:
  cmd.run:
    - name: >-
        mkdir -p /etc/ami-test &&
        for i in $(seq 4000); do printf '%s\n' "$AMIGUEST_SECRET"; done > /var/tmp/amiguest-scratch &&
        sync && rm /var/tmp/amiguest-scratch && sync && touch /etc/ami-test/scratched
    - env:
      - AMIGUEST_SECRET: {{ salt['pillar.get']('amitest:secret', 'no-secret-given') | yaml_encode }}
    - creates: /etc/ami-test/scratched

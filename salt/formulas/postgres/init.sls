# PostgreSQL server (Debian 12: PostgreSQL 15, its cluster "main" made by the package), started
# at boot.

postgresql:
  pkg.installed: []

# Enabled as `systemctl enable` would (postgresql.service is WantedBy=multi-user.target), by
# the link itself: when the image is baked in a chroot (strategy volume) systemd is not PID 1,
# so service.enabled cannot work, and a minimal image may have no systemctl at all. The
# package's own postinst usually makes the same link; this keeps it if a policy prevented that.
/etc/systemd/system/multi-user.target.wants/postgresql.service:
  file.symlink:
    - target: /lib/systemd/system/postgresql.service
    - makedirs: True
    - require:
      - pkg: postgresql

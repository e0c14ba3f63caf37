# The worked example baked by `examples/local-bake/run`: Debian 12 with PostgreSQL 15 and
# psycopg 3, on this machine (strategy local), from a vanilla Debian 12 made here with
# debootstrap (kernel, GRUB, cloud-init), written as a zlib qcow2, a zstd qcow2 and the AMI
# triplet. Every key is documented in pillar.example.
ami:
  flavours:
    debian-postgres:
      description: Debian 12 with PostgreSQL 15 and psycopg 3
      base: {vanilla: debian-12}
      strategy: local
      sls: [postgres, postgres.python]
      outputs: [qcow2, qcow2-zstd, ami]
      properties: {os_distro: debian, os_version: "12"}

# What a developer uses against the server: psql and friends, and pg_top to watch it.

postgres-devtools:
  pkg.installed:
    - pkgs:
      - postgresql-client
      - pgtop

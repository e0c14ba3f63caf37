# psycopg 3 (import psycopg) for the system python3: Debian 12's python3-psycopg. Code that
# still imports psycopg2 needs python3-psycopg2 instead; both can be installed side by side.

python3-psycopg:
  pkg.installed: []

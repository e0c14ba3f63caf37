# -*- coding: utf-8 -*-
# vim: ft=sls
# The redis server: its package, its config (and that of each extra instance), the service
# started and enabled at boot, and its ACL users, which the running server keeps.
include:
  - .package
  - .config
  - .service
  - .users

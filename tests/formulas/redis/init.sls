# -*- coding: utf-8 -*-
# vim: ft=sls
# The server and its command line client; redis.python adds the Python bindings.
include:
  - .server
  - .client

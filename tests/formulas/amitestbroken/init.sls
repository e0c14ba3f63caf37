# a flavour SLS that fails, for the tests of a build's cleanup
amitest-broken-step:
  cmd.run:
    - name: echo "this state fails on purpose" >&2; exit 7

# a flavour SLS that outlasts a short timeouts.apply
amitest-slow-step:
  cmd.run:
    - name: sleep 60

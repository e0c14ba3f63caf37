# a flavour SLS after which the scrub fails: it cannot remove an immutable shell history
amitest-noscrub-step:
  cmd.run:
    - name: echo 'kept on purpose' > /root/.bash_history && chattr +i /root/.bash_history

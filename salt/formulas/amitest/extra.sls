# A second SLS for the build tests: one a flavour adds to those it extends.

/etc/ami-test/extra:
  file.managed:
    - contents: {{ salt['pillar.get']('amitest:extra', 'extra') | yaml_encode }}
    - makedirs: True
    - mode: '0644'

# The grandchild of the image family tests (tests/integration/test_families.py): one file, on
# an image that holds its parent's (amitest.extra) and its grandparent's (amitest) already.

/etc/ami-test/grandchild:
  file.managed:
    - contents: {{ salt['pillar.get']('amitest:mark', 'grandchild') | yaml_encode }}
    - makedirs: True
    - mode: '0644'

# -*- coding: utf-8 -*-
# vim: ft=sls
# Python 3 for the formulas that include this one (their bindings are packages built for it).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import python with context %}

python-packages:
  pkg.installed:
    - pkgs: {{ (python.pkgs + (python.pip_pkgs if python.pip else [])) | json }}

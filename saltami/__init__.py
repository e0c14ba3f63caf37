"""saltami: bake golden OpenStack images with Salt.

The library under the Salt loader modules in _modules/, _states/ and _runners/.
"""
__version__ = "0.1.0"

"""The configs: a base per method, a file per protocol (each docstring holds its launch
command), ``common.py`` for what they share. Shipped with the package so that the Python API
(``ddad_jax.api.distill(..., config=ddad.get_config(...))``) works outside a checkout."""

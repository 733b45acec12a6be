"""Framework adapters and model integrations for tops-prune.

Submodules are imported on demand: ``tops_adapters.torch``,
``tops_adapters.mlx`` (array adapters, used by :func:`tops_core.select`), and
the model integrations.
"""

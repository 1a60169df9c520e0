"""Frozen dataclasses registered as JAX pytrees."""

from __future__ import annotations

import dataclasses

import jax


def pytree_dataclass(cls):
    """Make `cls` a frozen dataclass whose fields are pytree children.

    Fields listed in the class attribute `_static` become static (aux data): they must
    be hashable and changing them changes the tree structure.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    static = set(getattr(cls, "_static", ()))
    names = [f.name for f in dataclasses.fields(cls)]
    data = [n for n in names if n not in static]
    meta = [n for n in names if n in static]
    jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    cls.replace = replace
    return cls

"""timm's feature interface: ``feature_info`` and the ``features_only`` / ``out_indices`` options.

A model's feature maps are numbered as timm numbers a ResNet's: 0 is the stem's output (before its max
pool), 1..N the stages ``layer1..layerN``. ``feature_info`` lists them all (dicts with ``module``,
``num_chs``, ``reduction``, as timm's) and answers timm's ``FeatureInfo`` accessors for the selected ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError


class FeatureInfo(list):
    """A list of ``{"module", "num_chs", "reduction"}`` dicts, one per feature map, with timm's accessors.

    ``channels()``, ``reduction()`` and ``module_name()`` answer for ``out_indices`` (all maps unless the
    model was built with ``features_only=True, out_indices=...``), or for one index or a list of them.
    """

    def __init__(self, entries: Sequence[dict], out_indices: Sequence[int] | None = None) -> None:
        super().__init__(entries)
        self.out_indices = tuple(range(len(entries))) if out_indices is None else tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> list | object:
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list | dict:
        def pick(i: int) -> dict:
            return dict(self[i]) if keys is None else {k: self[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        return [pick(i) for i in idx] if isinstance(idx, Sequence) else pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> list | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> list | int:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> list | str:
        return self.get("module", idx)


def check_out_indices(out_indices: object, num_maps: int, features_only: bool) -> tuple[int, ...]:
    """``out_indices`` as sorted non-negative ints (negative ones count from the end, as in Python)."""
    if out_indices is None:
        return tuple(range(num_maps))
    if not features_only:
        raise ConfigError("out_indices selects the feature maps of features_only=True; set both")
    single = isinstance(out_indices, int) and not isinstance(out_indices, bool)
    items = [out_indices] if single else out_indices
    if (
        not isinstance(items, Sequence)
        or isinstance(items, str)
        or not items
        or any(isinstance(i, bool) or not isinstance(i, int) or not -num_maps <= i < num_maps for i in items)
    ):
        raise ConfigError(
            f"out_indices must be a list of feature-map indices in [0, {num_maps - 1}] (0: the "
            f"stem, 1..{num_maps - 1}: the stages; negative ones count from the end), "
            f"got {out_indices!r}"
        )
    indices = sorted({i % num_maps for i in items})
    if len(indices) != len(items):
        raise ConfigError(f"out_indices lists a feature map twice: {out_indices!r}")
    return tuple(indices)

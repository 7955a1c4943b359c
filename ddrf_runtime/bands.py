"""Band names, the canonical band order and the data families: what a model of each family fuses.

Kept free of I/O and heavy imports, so the training side (also on a bare GPU box without rasterio or scipy)
and the MTF tables can use it without pulling in the dataset readers.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

CANONICAL_FIRST = ("B", "G", "R", "NIR")
WV_NATIVE = ("Coastal", "B", "G", "Yellow", "R", "RedEdge", "NIR", "NIR2")
# Hyperion bands kept in the EO-1 Paris files (``non_del_bands``; a test checks this).
HYPERION_BANDS = tuple(f"H{n:03d}" for n in itertools.chain(
    range(8, 57), range(83, 97), range(102, 119), range(135, 163), range(194, 197), range(202, 215), range(216, 220)))


def canonical_order(native: tuple[str, ...]) -> tuple[int, ...]:
    """Indices that put B, G, R, NIR first and keep the other bands in native order.

    A band set with none of the four (hyperspectral, in wavelength order) keeps its native order.
    """
    missing = [b for b in CANONICAL_FIRST if b not in native]
    if len(missing) == len(CANONICAL_FIRST):
        return tuple(range(len(native)))
    if missing:
        raise ValueError(f"bands {missing} absent from {native}")
    first = tuple(native.index(b) for b in CANONICAL_FIRST)
    return first + tuple(i for i in range(len(native)) if i not in first)


@dataclass(frozen=True)
class Family:
    """What a model of one data family fuses: its C band names (channel order), k guide bands, ratio, the
    bit depth assumed when a raster does not state one (``ModelSpec.default_bit_depth``), and the brightness
    its models are fed under ``ValueScale.SCENE_MEAN`` (``ModelSpec.reference_mean``)."""

    bands: tuple[str, ...]
    guide_bands: int
    ratio: int
    bit_depth: int
    reference_mean: float = 0.0  # median over the train split's Wald pairs of the mean MS ÷ full scale (a test
    # recomputes it); 0: the family's models offer bit-depth scaling only
    value_scale: str = "bit_depth"  # its models' default input scaling (a ``ValueScale`` value), chosen by
    # benchmarks.quality / benchmarks.radiometry
    brightness_range: tuple[float, float] = (0.0, 1.0)  # darkest and brightest train-split pair, mean MS ÷ full
    # scale (a test recomputes it): ``ValueScale.AUTO`` keeps a guessed bit depth that puts a scene inside it


FAMILIES: Mapping[str, Family] = MappingProxyType({
    # 4-band: a bit depth that is stated, or guessed and plausible, is trusted (held out it scores 0–1.5 % better
    # than scene-mean scaling); an implausible guess is not (a wrong full scale costs up to 22 %; benchmarks.radiometry)
    "4band": Family(CANONICAL_FIRST, 1, 4, 11, reference_mean=0.239, value_scale="auto",
                    brightness_range=(0.073, 0.280)),
    # 8-band: WorldView-2/3 users, the sensors it trained on; scene-mean scaling cost 0.5–0.9 points there
    "8band": Family(tuple(WV_NATIVE[i] for i in canonical_order(WV_NATIVE)), 1, 4, 11, reference_mean=0.204,
                    brightness_range=(0.192, 0.224)),
    "hs_ms": Family(HYPERION_BANDS, 9, 3, 15),
    "hs_pan": Family(HYPERION_BANDS, 1, 3, 15),
})

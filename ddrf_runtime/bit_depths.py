"""Sensor bit depths from observed values: pure math, so the training readers need no raster library."""
from __future__ import annotations

import math

STANDARD_BIT_DEPTHS = (8, 10, 11, 12, 14, 16)  # what sensors' ADCs deliver, smallest first


def bit_depth_for_max(value: float, floating: bool = False) -> int:
    """Smallest standard sensor bit depth whose full scale holds ``value`` (an observed maximum).

    Float rasters hold physical units (radiance, reflectance), not counts of a sensor's ADC: they get the
    smallest 2**L − 1 above the maximum, any L ≥ 1, which is how the training readers scale float sources
    (CristianICS radiance max 118.2 → 7 bits, full scale 127), so a model sees them at the scale it learned.
    """
    if floating:
        return max(1, math.ceil(math.log2(value + 1)))
    for bits in STANDARD_BIT_DEPTHS:
        if value <= 2**bits - 1:
            return bits
    return max(16, math.ceil(math.log2(value + 1)))

"""Co-registration of the MS and the PAN, checked from the pixels: the integer PAN-pixel offset at which the PAN,
averaged onto the MS grid, is best explained by a linear combination of the MS bands.

Real pairs are often a few PAN pixels off what their geotransforms say (SpaceNet-2 Shanghai's by 3 PAN rows, in
every quadrant of the scene), and a fusion of misregistered inputs draws every edge twice — the PAN's detail in one
place, the MS's colour in another. Pure numpy; the scene pipeline reads the windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

SEARCH = 4  # PAN pixels searched each way from the geotransforms' pairing (Shanghai's 3 rows fit)
MIN_GAIN = 0.01  # correlation a shift must add to count (Shanghai's 3 rows add 0.070; CristianICS's 2 rows only
# 0.002, and fusing it moved scored a lower HQNR, 0.944 against 0.947)
MIN_IMPROVEMENT = 0.25  # and the share of the fit's shortfall (1 − correlation) it must remove (Shanghai: 76 %;
# SpaceNet-6 Rotterdam scene 1's one column, 0.892 → 0.913: 19 %, not moved)
MIN_PIXELS = 256  # valid MS pixels below which no offset is estimated


class Coregistration(str, Enum):
    """What the scene pipeline does with the offset (``ddrf-run --coregister``)."""

    AUTO = "auto"  # estimate it, report it, and fuse a shifted pair with the PAN's window moved by it: the output
    # stays on the PAN's pixel grid (an MS row or column at an edge may go), the MS colour moves onto the PAN's detail
    CHECK = "check"  # estimate and report it, warn when the pair is shifted, fuse as georeferenced
    OFF = "off"  # trust the geotransforms


@dataclass(frozen=True)
class Registration:
    """The PAN offset that fits the MS best, how well the PAN fits at it and where the geotransforms put it, and
    the offset each quadrant of the window prefers (a shift moves all four alike; a warp or a seam does not)."""

    offset: tuple[int, int]  # (rows, columns) of PAN pixels to move the PAN's window by; (0, 0): as georeferenced
    correlation: float  # of the MS-grid PAN with its least-squares fit from the MS bands, at (0, 0)
    best_correlation: float  # the same at ``offset``; NaN for both when too few pixels were valid
    quadrants: tuple[tuple[int, int] | None, ...] = ()  # best offsets of the window's four quadrants (None: too
    # few valid pixels in it to tell)

    @classmethod
    def unmeasured(cls) -> Registration:
        """Too few valid pixels to tell: the geotransforms' pairing stands."""
        return cls((0, 0), math.nan, math.nan)

    @property
    def shifted(self) -> bool:
        """Whether the pair is shifted: moving the PAN fits the MS better beyond the noise of the measure
        (``MIN_GAIN``, ``MIN_IMPROVEMENT``), and every quadrant prefers the same move to within a pixel per axis
        (a sub-pixel shift flips between neighbours; a warp or a seam moves them further apart, and is no shift to
        undo); a window too small for its quadrants to tell is not moved."""
        gain = self.best_correlation - self.correlation
        return (self.offset != (0, 0) and gain >= max(MIN_GAIN, MIN_IMPROVEMENT * (1.0 - self.correlation))
                and len(self.quadrants) == 4 and all(q is not None and abs(q[0] - self.offset[0]) <= 1
                                                     and abs(q[1] - self.offset[1]) <= 1 for q in self.quadrants))

    def as_dict(self) -> dict:
        """For the run report (JSON: an unmeasured correlation is null)."""
        def score(c: float) -> float | None:
            return None if math.isnan(c) else round(c, 4)
        return {"offset": list(self.offset), "correlation": score(self.correlation),
                "best_correlation": score(self.best_correlation), "quadrants": [q and list(q) for q in self.quadrants],
                "shifted": self.shifted}


def _block_sums(integral: np.ndarray, row: int, col: int, ratio: int, h: int, w: int) -> np.ndarray:
    """(h, w) sums of the ratio×ratio PAN blocks whose first starts at (row, col), from the PAN's summed-area
    table ``integral`` (one leading row and column of zeros)."""
    rows, cols = row + ratio * np.arange(h + 1), col + ratio * np.arange(w + 1)
    corners = integral[np.ix_(rows, cols)]  # (h + 1, w + 1)
    return corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]


def _scores(ms: np.ndarray, valid: np.ndarray, integral: np.ndarray, ratio: int, search: int,
            at: tuple[int, int]) -> dict[tuple[int, int], float]:
    """Correlation of the fit per offset, for the MS window ``ms`` (h, w, C) whose first pixel is MS pixel ``at``
    of the PAN summed-area table's window; empty when fewer than ``MIN_PIXELS`` are valid."""
    h, w = ms.shape[:2]
    n = int(valid.sum())
    if n < MIN_PIXELS:
        return {}
    design = np.column_stack([ms[valid].astype(np.float64), np.ones(n)])  # (n, C + 1)
    u, sv, _ = np.linalg.svd(design, full_matrices=False)
    basis = u[:, sv > 1e-10 * sv[0]]  # (n, rank): orthonormal, spans the bands and the constant (a flat band adds none)
    scores = {}
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            b = _block_sums(integral, search + dy + ratio * at[0], search + dx + ratio * at[1], ratio, h, w)[valid]
            b = b - b.mean()  # (n,)
            energy = float(b @ b)
            fitted = basis.T @ b  # (rank,): the fit's coordinates; its norm over b's is the correlation
            scores[(dy, dx)] = math.sqrt(float(fitted @ fitted) / energy) if energy > 0 else 0.0
    return scores


def _best(scores: dict[tuple[int, int], float]) -> tuple[int, int]:
    """The best-scoring offset; ties go to the smaller shift."""
    return max(scores, key=lambda o: (scores[o], -abs(o[0]) - abs(o[1])))


def estimate_offset(ms: np.ndarray, pan: np.ndarray, valid: np.ndarray, ratio: int,
                    search: int = SEARCH) -> Registration:
    """The offset of ``pan`` against ``ms`` within ±``search`` PAN pixels, over the window and its quadrants.

    ``ms`` (h, w, C) is an MS window, ``pan`` (r·h + 2·search, r·w + 2·search) the PAN under it as georeferenced with
    ``search`` pixels more on every side, ``valid`` (h, w) the MS pixels to use. For each offset the PAN is averaged
    over the ratio×ratio blocks of the MS pixels and regressed on the MS bands (with an offset term), as the
    component-substitution methods estimate their intensity; the score is the correlation of that fit.
    """
    h, w = ms.shape[:2]
    if pan.shape != (ratio * h + 2 * search, ratio * w + 2 * search):
        raise ValueError(f"pan {pan.shape} is not the MS window {(h, w)} × {ratio} with {search} pixels around it")
    integral = np.pad(pan.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    scores = _scores(ms, valid, integral, ratio, search, (0, 0))
    if not scores:
        return Registration.unmeasured()
    best = _best(scores)
    quadrants = []
    for r0, r1 in ((0, h // 2), (h // 2, h)):
        for c0, c1 in ((0, w // 2), (w // 2, w)):
            part = _scores(ms[r0:r1, c0:c1], valid[r0:r1, c0:c1], integral, ratio, search, (r0, c0))
            quadrants.append(_best(part) if part else None)
    return Registration(best, scores[(0, 0)], scores[best], tuple(quadrants))

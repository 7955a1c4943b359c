"""One-level DB1 (Haar) 2-D DWT in numba, and the network's wavelet input built from it.

The wavelet input depends only on the conditions, so it is computed once per tile outside the ONNX
graph. Values equal ``pywt.dwt2(x, "db1")`` (default 'symmetric' mode): for each 2×2 block
``[[a, b], [c, d]]``

    cA = (a + b + c + d)/2   cH = (a + b − c − d)/2   cV = (a − b + c − d)/2   cD = (a − b − c + d)/2

and an odd last row/column is mirrored (its missing partner is itself), giving ⌈H/2⌉ × ⌈W/2⌉ bands.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Output-channel codes for the kernel: which sub-bands of an input plane to write, and where.
_SKIP = -1


@njit(parallel=True, nogil=True, cache=True)
def _haar_kernel(x, ll_dst, hvd_dst, out):  # pragma: no cover - compiled; exercised through the wrappers
    """x (B, P, H, W) → out (B, Q, ⌈H/2⌉, ⌈W/2⌉).

    Plane p writes its cA to channel ``ll_dst[p]`` and its (cH, cV, cD) to ``hvd_dst[p] + 0, 1, 2``;
    ``-1`` skips. Doing the channel layout here lets one pass fill the concatenated network input.
    """
    nb, npl, h, w = x.shape
    h2, w2 = out.shape[2], out.shape[3]
    wp = w // 2  # complete column pairs; an odd last column is handled after the loop
    for job in prange(nb * npl * h2):
        b = job // (npl * h2)
        p = (job // h2) % npl
        i = job % h2
        r0 = 2 * i
        r1 = min(r0 + 1, h - 1)  # symmetric extension: an odd last row pairs with itself
        ll = ll_dst[p]
        hvd = hvd_dst[p]
        for j in range(w2):
            c0 = 2 * j
            c1 = c0 + 1 if j < wp else c0
            a = x[b, p, r0, c0]
            bb = x[b, p, r0, c1]
            c = x[b, p, r1, c0]
            d = x[b, p, r1, c1]
            if ll >= 0:
                out[b, ll, i, j] = np.float32(0.5) * ((a + bb) + (c + d))
            if hvd >= 0:
                out[b, hvd, i, j] = np.float32(0.5) * ((a + bb) - (c + d))
                out[b, hvd + 1, i, j] = np.float32(0.5) * ((a - bb) + (c - d))
                out[b, hvd + 2, i, j] = np.float32(0.5) * ((a - bb) - (c - d))


def _half(n: int) -> int:
    return (n + 1) // 2


def _as_f32(x: np.ndarray) -> np.ndarray:
    """float32 without copying when it already is (views of the condition tensor stay views)."""
    return x if x.dtype == np.float32 else x.astype(np.float32)


def dwt2_db1(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``pywt.dwt2(x, "db1")`` over the last two axes of a (..., H, W) array, as float32.

    Returns (cA, cH, cV, cD), each (..., ⌈H/2⌉, ⌈W/2⌉) (views into one buffer).
    """
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"dwt2_db1 needs a non-empty (..., H, W) array, got shape {x.shape}")
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    planes = _as_f32(np.ascontiguousarray(x)).reshape(-1, 1, h, w)  # (N, 1, H, W)
    out = np.empty((planes.shape[0], 4, _half(h), _half(w)), np.float32)  # (N, 4, h2, w2)
    _haar_kernel(planes, np.zeros(1, np.int64), np.ones(1, np.int64), out)
    bands = out.reshape(lead + (4, _half(h), _half(w)))
    return bands[..., 0, :, :], bands[..., 1, :, :], bands[..., 2, :, :], bands[..., 3, :, :]


def wavelet_condition(lms_n: np.ndarray, guide_n: np.ndarray) -> np.ndarray:
    """The network's ``wav`` input: cA of each lms band, then (cH_j, cV_j, cD_j) of each guide band j.

    lms_n (B, C, H, W), guide_n (B, k, H, W), normalised; views (e.g. channel slices of ``cond``) are
    read in place. Returns (B, C + 3k, ⌈H/2⌉, ⌈W/2⌉) float32, written directly in its final layout.
    """
    if lms_n.ndim != 4 or guide_n.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) arrays, got {lms_n.shape} and {guide_n.shape}")
    (nb, c, h, w), k = lms_n.shape, guide_n.shape[1]
    if guide_n.shape != (nb, k, h, w):
        raise ValueError(f"guide {guide_n.shape} does not match lms {lms_n.shape} in batch or size")
    out = np.empty((nb, c + 3 * k, _half(h), _half(w)), np.float32)  # (B, C+3k, H/2, W/2)
    _haar_kernel(_as_f32(lms_n), np.arange(c, dtype=np.int64), np.full(c, _SKIP, np.int64), out)
    _haar_kernel(_as_f32(guide_n), np.full(k, _SKIP, np.int64), c + 3 * np.arange(k, dtype=np.int64), out)
    return out

"""Fusion quality metrics with the semantics of the MATLAB pansharpening toolbox (Vivone et al., 2021).

Published tables come from that toolbox, so every detail that changes a number follows it (see the shared
``docs/metrics.md``): Q2ⁿ rounds to uint16 and mirror-pads, SCC uses Sobel magnitudes with zero padding, D_s
uses non-overlapping blocks and a bicubic-antialiased PAN degradation. Images are H×W×C float arrays in
digital numbers (an H×W array counts as one band); nothing is cropped at the borders. numpy/scipy only.
"""
from __future__ import annotations

import functools
import math
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from ddrf_runtime.errors import InputError
from ddrf_runtime.resample import keys_cubic, upsample

_EPS = np.finfo(np.float64).eps
_SOBEL = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])  # MATLAB fspecial('sobel')


def _cube(img: np.ndarray, name: str) -> np.ndarray:
    """float64 H×W×C view/copy; an H×W image becomes one band."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(f"{name} must be H×W or H×W×C, got shape {arr.shape}")
    return arr


def _pair(ref: np.ndarray, fused: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, fused = _cube(ref, "reference"), _cube(fused, "fused image")
    if ref.shape != fused.shape:
        raise InputError(f"shape mismatch: reference {ref.shape} vs fused {fused.shape}")
    return ref, fused


# ---------------------------------------------------------------- reduced resolution (with reference)


def sam(ref: np.ndarray, fused: np.ndarray) -> float:
    """Mean spectral angle in degrees; pixels where either spectrum is all-zero are left out (NaN if all are)."""
    ref, fused = _pair(ref, fused)
    dot = np.einsum("hwc,hwc->hw", ref, fused)
    norm = np.sqrt(np.einsum("hwc,hwc->hw", ref, ref) * np.einsum("hwc,hwc->hw", fused, fused))
    valid = norm > 0
    if not valid.any():
        return float("nan")
    cos = np.clip(dot[valid] / norm[valid], -1.0, 1.0)
    return float(np.degrees(np.arccos(cos).mean()))


def ergas(ref: np.ndarray, fused: np.ndarray, ratio: float) -> float:
    """(100/ratio)·sqrt(mean_k MSE_k / mean(ref_k)²); ``ratio`` is the GSD ratio (4), not its inverse."""
    ref, fused = _pair(ref, fused)
    mse = ((ref - fused) ** 2).mean(axis=(0, 1))  # (C,)
    mean_sq = ref.mean(axis=(0, 1)) ** 2  # (C,)
    return float(100.0 / ratio * np.sqrt(np.mean(mse / mean_sq)))


def psnr(ref: np.ndarray, fused: np.ndarray, full_scale: float) -> float:
    """Per-band PSNR (dB) of images divided by ``full_scale``, averaged over bands; inf if a band is exact."""
    ref, fused = _pair(ref, fused)
    mse = (((ref - fused) / full_scale) ** 2).mean(axis=(0, 1))  # (C,)
    with np.errstate(divide="ignore"):
        return float(np.mean(-10.0 * np.log10(mse)))


def _sobel_magnitude(img: np.ndarray) -> np.ndarray:
    """Toolbox SCC gradients: drop a 1-pixel border, then zero-padded Sobel correlation per band.  # (H-2, W-2, C)"""
    core = img[1:-1, 1:-1]
    gy = ndimage.correlate(core, _SOBEL[:, :, None], mode="constant", cval=0.0)
    gx = ndimage.correlate(core, _SOBEL.T[:, :, None], mode="constant", cval=0.0)
    return np.hypot(gx, gy)


def scc(ref: np.ndarray, fused: np.ndarray) -> float:
    """Uncentred cosine similarity of the two Sobel-magnitude cubes over all bands (toolbox 2021 SCC)."""
    ref, fused = _pair(ref, fused)
    g_ref, g_fus = _sobel_magnitude(ref), _sobel_magnitude(fused)
    denom = math.sqrt(float((g_ref**2).sum()) * float((g_fus**2).sum()))
    return float((g_ref * g_fus).sum() / denom) if denom > 0 else float("nan")


# ---------------------------------------------------------------- Q2ⁿ (hypercomplex UIQI)


@functools.lru_cache(maxsize=8)
def _onion_table(n: int) -> np.ndarray:
    """Signs of the toolbox's Cayley–Dickson ("onion") product: e_i·e_j = sign[i, j]·e_(i XOR j).  # (n, n)

    The toolbox multiplies halves x = (a, b), y = (c, d) as (a·c − d̄·b, ā·d̄ + c·b̄) (bar: negate all but
    the first component). That conjugation placement is not textbook Cayley–Dickson, and Q2ⁿ depends on it,
    so the four basis cases of that rule are unrolled here, n a power of two.
    """
    if n == 1:
        return np.ones((1, 1))
    half = _onion_table(n // 2)
    bar = np.where(np.arange(n // 2) == 0, 1.0, -1.0)  # sign the conjugate gives each basis element
    # Row block: x in the first / second half (i, i'); column block: y in the first / second half (j, j').
    return np.block([
        [half, bar[:, None] * bar[None, :] * half],  # e_i·e_j;  ē_i·ē_j' (lands in the second half)
        [bar[:, None] * half.T, -bar[None, :] * half.T],  # e_j·ē_i' (second half);  −ē_j'·e_i'
    ])


def _onion_product(cross: np.ndarray) -> np.ndarray:
    """Onion products (summed/averaged) given their cross-moments cross[..., i, j] = E[x_i y_j].  # (..., N)

    The product is bilinear, so E[x·y]_k = Σ_i sign[i, i⊕k]·E[x_i y_(i⊕k)]: one batched matrix product
    of the pixels gives a block's mean product, instead of O(N²) array operations per pixel.
    """
    n = cross.shape[-1]
    rows = np.arange(n)[:, None]
    partner = rows ^ np.arange(n)[None, :]  # (N, N): partner[i, k] = i XOR k
    return (cross[..., rows, partner] * _onion_table(n)[rows, partner]).sum(axis=-2)


def _to_uint16_values(img: np.ndarray) -> np.ndarray:
    """MATLAB ``uint16(x)`` as floats: round half away from zero, saturate to [0, 65535]."""
    return np.clip(np.floor(img + 0.5), 0.0, 65535.0)


def _onions_quality(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Q2ⁿ of each block: x, y are (B, P, N) blocks of P pixels with N hypercomplex components.  # (B,)

    Both are normalised by the reference's per-block band mean and std (ddof=1; eps if 0), plus 1, as
    the toolbox does; its quirk of skipping the std division of the fused band when the reference mean is 0
    (all-zero padded bands) is kept.
    """
    n = x.shape[1]
    unbias = n / (n - 1.0)
    mean = x.mean(axis=1, keepdims=True)  # (B, 1, N)
    std = x.std(axis=1, ddof=1, keepdims=True)
    std = np.where(std == 0, _EPS, std)
    xn = (x - mean) / std + 1.0
    yn = (y - mean) / np.where(mean == 0, 1.0, std) + 1.0
    yn[..., 1:] *= -1.0  # the fused block enters conjugated
    m1, m2 = xn.mean(axis=1), yn.mean(axis=1)  # (B, N)
    m1_sq, m2_sq = (m1**2).sum(-1), (m2**2).sum(-1)  # (B,)
    var_sum = unbias * ((xn**2).sum(-1).mean(1) + (yn**2).sum(-1).mean(1) - m1_sq - m2_sq)
    mean_bias = 2.0 * np.sqrt(m1_sq * m2_sq) / (m1_sq + m2_sq)
    mean_prod = _onion_product(np.matmul(xn.transpose(0, 2, 1), yn) / n)  # (B, N)
    cov = unbias * (mean_prod - _onion_product(m1[:, :, None] * m2[:, None, :]))
    scale = np.divide(2.0, var_sum, out=np.zeros_like(var_sum), where=var_sum != 0)
    return np.where(var_sum == 0, mean_bias, np.linalg.norm(cov, axis=-1) * mean_bias * np.abs(scale))


def q2n(ref: np.ndarray, fused: np.ndarray, block_size: int = 32, shift: int = 32) -> float:
    """Q2ⁿ (Q4, Q8, …) exactly as the toolbox computes it: mean of block qualities, ideal 1.

    Both images are rounded to uint16, mirror-padded right/bottom so the block grid covers them, and
    zero-padded to a power-of-two band count before the hypercomplex block statistics.
    """
    ref, fused = _pair(ref, fused)
    h, w, c = ref.shape
    rows, cols = math.ceil(h / shift), math.ceil(w / shift)
    nb = 1 << (c - 1).bit_length()
    pad = ((0, (rows - 1) * shift + block_size - h), (0, (cols - 1) * shift + block_size - w), (0, 0))

    def blocks(img: np.ndarray) -> np.ndarray:  # (rows·cols, block², nb)
        img = np.pad(_to_uint16_values(img), pad, mode="symmetric")
        img = np.pad(img, ((0, 0), (0, 0), (0, nb - c)))
        win = sliding_window_view(img, (block_size, block_size), axis=(0, 1))[::shift, ::shift]
        return win.transpose(0, 1, 3, 4, 2).reshape(rows * cols, block_size * block_size, nb)

    return float(_onions_quality(blocks(ref), blocks(fused)).mean())


# ---------------------------------------------------------------- UIQI (Q index, D_s)


def _uiqi_from_sums(
    n: int, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray
) -> np.ndarray:
    """UIQI from window sums of x, y, x², y², xy over n pixels, with Wang's conventions for flat windows.

    A window whose two variances are both 0 scores 2·μx·μy/(μx²+μy²) (1 if both means are 0 too), where the
    plain formula would be 0/0.
    """
    prod = sx * sy
    sq = sx * sx + sy * sy
    den1 = n * (sxx + syy) - sq
    den = den1 * sq
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = np.where(sq != 0, 2.0 * prod / sq, 1.0)
        return np.where(den != 0, 4.0 * (n * sxy - prod) * prod / den, np.where(den1 == 0, flat, 1.0))


def _window_sums(img: np.ndarray, size: int) -> np.ndarray:
    """Sums over every size×size window (stride 1, valid) via an integral image.  # (H-size+1, W-size+1, C)

    Exact for integer-valued DN images, so flat windows are detected exactly.
    """
    s = np.pad(img.cumsum(0).cumsum(1), ((1, 0), (1, 0), (0, 0)))
    return s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]


def q_index(ref: np.ndarray, fused: np.ndarray, block_size: int = 32) -> float:
    """Per-band UIQI on sliding block_size² windows (stride 1, valid), mean over windows then bands."""
    ref, fused = _pair(ref, fused)
    if min(ref.shape[:2]) < block_size:
        raise InputError(f"image {ref.shape[:2]} is smaller than the {block_size}×{block_size} window")
    sums = [_window_sums(v, block_size) for v in (ref, fused, ref * ref, fused * fused, ref * fused)]
    return float(_uiqi_from_sums(block_size * block_size, *sums).mean(axis=(0, 1)).mean())


def _block_view(img: np.ndarray, size: int) -> np.ndarray:
    """H×W×C → (H/size, size, W/size, size, C) non-overlapping blocks (no copy)."""
    h, w, c = img.shape
    return img.reshape(h // size, size, w // size, size, c)


def _block_uiqi_means(x: np.ndarray, g: np.ndarray, size: int) -> np.ndarray:
    """Block-averaged UIQI of every band of x against every band of g (non-overlapping blocks).  # (C, k)"""
    xb, gb = _block_view(x, size), _block_view(g, size)
    sx, sxx = xb.sum(axis=(1, 3)), (xb * xb).sum(axis=(1, 3))  # (H/s, W/s, C)
    sg, sgg = gb.sum(axis=(1, 3)), (gb * gb).sum(axis=(1, 3))  # (H/s, W/s, k)
    sxg = np.einsum("iajbc,iajbk->ijck", xb, gb)  # (H/s, W/s, C, k)
    q = _uiqi_from_sums(size * size, sx[..., :, None], sg[..., None, :], sxx[..., :, None], sgg[..., None, :], sxg)
    return q.mean(axis=(0, 1))


# ---------------------------------------------------------------- full resolution (no reference)


def _check_full_res(fused: np.ndarray, lms: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    lms, fused = _pair(lms, fused)
    if fused.shape[0] % block_size or fused.shape[1] % block_size:
        raise InputError(f"image sides {fused.shape[:2]} must be multiples of the block size {block_size}")
    return fused, lms


def _imresize_down_matrix(n_in: int, ratio: int) -> np.ndarray:
    """One axis of MATLAB ``imresize(x, 1/ratio)`` (bicubic, antialiasing on) as a matrix.  # (ceil(n/r), n)

    Antialiasing stretches the kernel by ``ratio``; output pixel i (1-based) centres on input coordinate
    r·i + (1 − r)/2; taps outside the image are mirrored (symmetric, edge repeated), weights sum to 1.
    """
    n_out = math.ceil(n_in / ratio)
    u = np.arange(1, n_out + 1) * ratio + 0.5 * (1 - ratio)  # (n_out,) 1-based input coordinates
    width = 4.0 * ratio
    taps = np.floor(u - width / 2)[:, None] + np.arange(math.ceil(width) + 2)  # (n_out, P) 1-based
    weights = keys_cubic((u[:, None] - taps) / ratio) / ratio
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    cols = mirror[np.mod(taps.astype(np.int64) - 1, 2 * n_in)]
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.repeat(np.arange(n_out), taps.shape[1]), cols.ravel()), weights.ravel())
    return mat


def _imresize_down(img: np.ndarray, ratio: int) -> np.ndarray:
    """MATLAB ``imresize(img, 1/ratio)`` (bicubic, antialiased) of an H×W×k float image.  # (H/r, W/r, k)"""
    rows = _imresize_down_matrix(img.shape[0], ratio)
    cols = _imresize_down_matrix(img.shape[1], ratio)
    return np.einsum("ih,jw,hwk->ijk", rows, cols, img, optimize=True)


def _guide_lowpass(guide: np.ndarray, ratio: int) -> np.ndarray:
    """D_s's low-resolution PAN on the PAN grid: bicubic-antialiased ↓ratio, then 23-tap ↑ratio.  # (H, W, k)

    Ratios that are not powers of two (e.g. 3 for hyperspectral) are upsampled with Keys cubic instead.
    """
    return upsample(_imresize_down(guide, ratio), ratio)


def d_lambda(fused: np.ndarray, lms: np.ndarray, sensor: str, ratio: int, block_size: int = 32) -> float:
    """Khan's spectral distortion: 1 − Q2ⁿ(lms, fused low-passed by the sensor's MS MTF, no decimation)."""
    from ddrf_runtime.mtf import mtf_lowpass, ms_gains

    fused, lms = _check_full_res(fused, lms, block_size)
    low = mtf_lowpass(fused, ms_gains(sensor, fused.shape[2]), ratio)
    return 1.0 - q2n(lms, low, block_size, block_size)


def d_s(fused: np.ndarray, lms: np.ndarray, pan: np.ndarray, ratio: int, block_size: int = 32) -> float:
    """Spatial distortion: mean_k |Q(f_k, pan) − Q(lms_k, pan_lp)|, Q averaged over non-overlapping blocks.

    A k-band guide (H×W×k) is allowed: the difference is then averaged over every (fused band, guide band)
    pair, which reduces to the toolbox D_s for k = 1.
    """
    fused, lms = _check_full_res(fused, lms, block_size)
    guide = _cube(pan, "pan")
    if guide.shape[:2] != fused.shape[:2]:
        raise InputError(f"pan {guide.shape[:2]} and fused image {fused.shape[:2]} differ in size")
    q_high = _block_uiqi_means(fused, guide, block_size)
    q_low = _block_uiqi_means(lms, _guide_lowpass(guide, ratio), block_size)
    return float(np.abs(q_high - q_low).mean())


def hqnr(fused: np.ndarray, lms: np.ndarray, pan: np.ndarray, sensor: str, ratio: int) -> float:
    """Hybrid QNR = (1 − D_λ)(1 − D_s); ideal 1."""
    return full_resolution_metrics(fused, lms, pan, sensor, ratio)["HQNR"]


# ---------------------------------------------------------------- bundles for benchmarks


def reduced_resolution_metrics(ref: np.ndarray, fused: np.ndarray, ratio: int, full_scale: float) -> dict[str, float]:
    """The reduced-resolution table row: SAM (°), ERGAS, Q2n, SCC, PSNR (dB)."""
    return {
        "SAM": sam(ref, fused),
        "ERGAS": ergas(ref, fused, ratio),
        "Q2n": q2n(ref, fused),
        "SCC": scc(ref, fused),
        "PSNR": psnr(ref, fused, full_scale),
    }


def full_resolution_metrics(
    fused: np.ndarray, lms: np.ndarray, pan: np.ndarray, sensor: str, ratio: int
) -> dict[str, float]:
    """The full-resolution table row: D_lambda, D_s and HQNR = (1 − D_λ)(1 − D_s)."""
    dl = d_lambda(fused, lms, sensor, ratio)
    ds = d_s(fused, lms, pan, ratio)
    return {"D_lambda": dl, "D_s": ds, "HQNR": (1.0 - dl) * (1.0 - ds)}

"""``ddrf-run``: fuse a GeoTIFF MS/PAN pair into a pansharpened Cloud-Optimized GeoTIFF.

A thin layer over ``ddrf_runtime.scene.fuse_scene``: parse options into a ``SceneConfig``, turn library errors
into one line ``ddrf-run: error: <file or option>: <message>`` (exit 2), unexpected failures into exit 1,
Ctrl-C into 130.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .backends import Backend
from .consistency import DEFAULT_PROJECTIONS
from .errors import ConfigError, DdrfError, DeviceError, InputError
from .model_spec import ValueScale
from .pipeline import FuseOptions
from .registration import Coregistration
from .session import Device
from .trust import Trust

if TYPE_CHECKING:
    from .scene import SceneConfig

PROG = "ddrf-run"
# MS file name token → PAN token, tried on the last matching token of the file stem. Longest first, and not
# inside a word: 'x_mss' is one token, not 'ms' + 's'; 'farms' holds none.
_MS_TOKENS = re.compile(r"(?<![a-z])(multispectral|multi|mss|mul|ms)(?![a-z])", re.IGNORECASE)

EPILOG = """\
PAN discovery: without --pan, the PAN is looked for next to MS.tif by replacing the last
'ms'/'mul'/'mss'/'multi'/'multispectral' token of its name with 'pan' (ms.tif -> pan.tif,
scene_MUL.tif -> scene_PAN.tif, x_mss.tif -> x_pan.tif).

Bit depth: --bit-depth, else the NBITS tag of either file, else 8 for uint8, else the smallest
of 8/10/11/12/14/16 bits holding the data's maximum. Values above full scale are clipped.

Exit status: 0 success, 1 unexpected failure (a bug: rerun with -v), 2 bad input/option, 130 interrupted.
"""


def find_pan(ms_path: Path) -> Path:
    """The PAN next to ``ms_path`` by the naming convention in EPILOG."""
    matches = list(_MS_TOKENS.finditer(ms_path.stem))
    for m in reversed(matches):
        token = m.group(0)
        pan_token = "PAN" if token.isupper() else "pan"
        candidate = ms_path.with_name(ms_path.stem[:m.start()] + pan_token + ms_path.stem[m.end():] + ms_path.suffix)
        if candidate.exists():
            return candidate
    raise InputError("no PAN found next to it by the naming convention (see --help); pass --pan", str(ms_path))


def add_scene_options(p: argparse.ArgumentParser) -> None:
    """The model, device and fusion options every command that fuses scenes takes (ddrf-run, ddrf-batch)."""
    p.add_argument("--model", help="exported .onnx (or .pt with --backend torch); default: bundled model")
    p.add_argument("--backend", choices=[b.value for b in Backend], default="onnx",
                   help="network runtime: onnx (default) or torch (needs the train install)")
    p.add_argument("--device", choices=[d.value for d in Device], default="auto", help="auto | cuda | cpu")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--tile", type=int, help="tile side in PAN pixels (default: 512, or the largest multiple of "
                                            "the model's tile multiple below it)")
    p.add_argument("--overlap", type=int, help="tile overlap (default: 64, rounded up to a multiple of the ratio)")
    p.add_argument("--batch", type=int, default=FuseOptions.batch,
                   help="tile-samples per network call, at least one tile's --samples (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--samples", type=int, default=1,
                   help="fused samples per pixel (default 1); N > 1 writes their mean and, next to the output, "
                        "<output stem>_uncertainty.tif: per-band std (output units) and spectral spread (degrees)")
    p.add_argument("--bit-depth", type=int, help="input bit depth (full scale 2^b-1); default: inferred")
    p.add_argument("--value-scale", choices=[v.value for v in ValueScale],
                   help="how DN become network inputs: bit_depth (DN / full scale), scene_mean (the scene's mean "
                        "brightness mapped to the training data's: the bit depth then does not matter) or auto "
                        "(bit_depth when the bit depth is stated or a plausible guess, else scene_mean); default: "
                        "the model's")
    p.add_argument("--trust", choices=[t.value for t in Trust], default=Trust.FITTED.value,
                   help="how much of the network's correction of its classical base to keep: fitted (default: the "
                        "scene one scale down is its own reference; a correction that does not help there is "
                        "scaled back towards the classical base) or full (as the network predicts it)")
    p.add_argument("--projections", type=int, default=DEFAULT_PROJECTIONS,
                   help="back-projection steps of the fused image onto the MS (its blur, decimated, gives back the "
                        f"MS; default {DEFAULT_PROJECTIONS}, 0 = off)")
    p.add_argument("--flip-ensemble", action="store_true",
                   help="average the network over the 4 flips of every tile: ~3.3x the time, ~2%% lower ERGAS/SAM")
    p.add_argument("--coregister", choices=[c.value for c in Coregistration], default=Coregistration.AUTO.value,
                   help="the PAN/MS offset measured from the pixels (±4 PAN pixels; in the report): auto (default: "
                        "a pair that fits better shifted, every quadrant of the scene agreeing to within a pixel, is "
                        "fused shifted, on the PAN's pixel grid), check (only warn) or off (trust the geotransforms)")
    p.add_argument("--threads", type=int, help="intra-op threads for the network")
    p.add_argument("--prepare-threads", type=int, help="threads reading and conditioning tiles while the network "
                                                       "runs (default: half the cores, 1 to 4)")
    p.add_argument("--metrics", action="store_true", help="full-resolution D_lambda / D_s / HQNR in the report")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("-v", "--verbose", action="store_true", help="log details; tracebacks on failure")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Pansharpen a multispectral GeoTIFF with its panchromatic band using DDRF.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ms", type=Path, metavar="MS.tif", help="low-resolution multispectral GeoTIFF")
    p.add_argument("--pan", type=Path, help="panchromatic (guide) GeoTIFF; default: found next to MS.tif")
    p.add_argument("-o", "--output", type=Path, help="output COG (default: <MS stem>_ddrf.tif next to MS.tif)")
    p.add_argument("--quicklook", type=Path, metavar="PNG", help="write an MS | PAN | fused preview")
    p.add_argument("--report", type=Path, metavar="JSON", help="write timings, providers and metrics")
    add_scene_options(p)
    return p


def setup_logging(prog: str, args: argparse.Namespace) -> None:
    """Log level from -q/-v; without -v, GDAL's TIFF-tag chatter is hidden (what matters is raised as errors)."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format=f"{prog}: %(message)s")
    if not args.verbose:
        logging.getLogger("rasterio").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="rasterio")


def scene_config(args: argparse.Namespace, **outputs: object) -> SceneConfig:
    """The ``SceneConfig`` of the options added by ``add_scene_options`` (plus side ``outputs``)."""
    from .scene import SceneConfig  # rasterio import errors are reported like the rest
    fuse = _fuse_options(args)
    try:
        return SceneConfig(model=args.model, backend=Backend(args.backend), device=Device(args.device), fuse=fuse,
                           threads=args.threads, prepare_threads=args.prepare_threads, overwrite=args.overwrite,
                           metrics=args.metrics, coregister=Coregistration(args.coregister), **outputs)
    except ConfigError as e:
        raise _option_error(e) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(PROG, args)
    return run_command(PROG, args.verbose, "interrupted; no output written", lambda: _fuse(args))


def _fuse(args: argparse.Namespace) -> int:
    from .scene import fuse_scene  # rasterio import errors are reported like the rest
    pan = args.pan or find_pan(args.ms)
    out = args.output or args.ms.with_name(f"{args.ms.stem}_ddrf.tif")
    config = scene_config(args, quicklook=str(args.quicklook) if args.quicklook else None,
                          report=str(args.report) if args.report else None)
    report = fuse_scene(args.ms, pan, out, config, progress=not args.quiet)
    if not args.quiet:
        _summary(report)
    return 0


def run_command(prog: str, verbose: bool, interrupted: str, body: Callable[[], int]) -> int:
    """``body()``'s exit status; failures as one line and the documented status: a library error 2, Ctrl-C 130
    (``interrupted`` says what became of the outputs), anything else 1 (a bug). ``verbose`` re-raises."""
    try:
        return body()
    except DdrfError as e:
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        if verbose:
            raise
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line unless -v
        print(f"{prog}: unexpected error: {type(e).__name__}: {e} (rerun with -v for the traceback)",
              file=sys.stderr)
        if verbose:
            raise
        return 1


def error_line(e: DdrfError) -> str:
    """A library error as the user reads it: ``<file or option>: <message>``."""
    where = "--device: " if isinstance(e, DeviceError) and e.path is None else ""  # no file: the option
    return f"{where}{e}"


def _fuse_options(args: argparse.Namespace) -> FuseOptions:
    """The fusion options; a value out of range is reported against its option (``--steps: must be >= 1``)."""
    try:
        return FuseOptions(steps=args.steps, tile=args.tile, overlap=args.overlap, batch=args.batch,
                           seed=args.seed, bit_depth=args.bit_depth, samples=args.samples,
                           flip_ensemble=args.flip_ensemble, trust=Trust(args.trust), projections=args.projections,
                           value_scale=None if args.value_scale is None else ValueScale(args.value_scale))
    except ConfigError as e:
        raise _option_error(e) from None


def _option_error(e: ConfigError) -> ConfigError:
    """A config field's error reported against its option (``--steps: must be >= 1``)."""
    return ConfigError(e.args[0], "--" + e.path.replace("_", "-"))


def _summary(report: dict) -> None:
    t = report["timings_s"]
    print(f"{PROG}: wrote {report['output']} ({report['size'][0]}×{report['size'][1]}, {len(report['bands'])} bands, "
          f"{report['steps']} step(s), {report['tiles']} tiles, {report['providers'][0]}) in {t['total']:.1f} s")
    for key in ("quicklook",):
        if key in report:
            print(f"{PROG}: {key}: {report[key]}")
    if "uncertainty" in report:
        u = report["uncertainty"]
        means = ", ".join(f"{k}={v['mean']:.3g}" for k, v in u.get("bands", {}).items())
        print(f"{PROG}: uncertainty ({u['samples']} samples): {u['path']} (means: {means})")
    if "metrics" in report:
        print(f"{PROG}: metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in report["metrics"].items()))


if __name__ == "__main__":
    sys.exit(main())

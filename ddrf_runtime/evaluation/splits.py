"""Which real regions each data family trains, validates and tests on (the reasons are in ``datasets``).

Plain data without I/O, so the training side can name its training split (model metadata) without
importing the readers.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple

from ..errors import ConfigError


class Region(NamedTuple):
    """A crop of one scene in MS pixels: half-open (start, stop) ranges, None = the whole extent."""

    scene: str
    cols: tuple[int, int] | None = None
    rows: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        parts = [f"{axis}{r[0]}:{r[1]}" for axis, r in (("r", self.rows), ("c", self.cols)) if r is not None]
        return f"{self.scene}[{','.join(parts)}]" if parts else self.scene


# FuseBox scene numbers per WRS-2 path/row (``locations.txt`` line N is scene N; a test checks this).
FUSEBOX_PATH_ROWS: Mapping[str, range] = MappingProxyType({
    "P034R032": range(1, 7),
    "P090R083": range(7, 13),
    "P091R083": range(13, 19),
    "P092R086": range(19, 25),
    "P093R085": range(25, 32),
    "P093R086": range(32, 40),
})


def _fusebox_regions(*path_rows: str) -> tuple[Region, ...]:
    return tuple(Region(f"fusebox_{n}") for pr in path_rows for n in FUSEBOX_PATH_ROWS[pr])


_TRAIN_COLS, _TEST_COLS = (0, 192), (192, 320)  # GRIP GE1 / WV2 strips (MS is 320 wide)
# The Osman scene trains as its two sides of the seam, each registered (``datasets``); it tests as its files pair it.
_OSMAN_TRAIN = (Region("osman_top", (0, 136)), Region("osman_bottom", (0, 136)))
_OSMAN_TEST = Region("osman", (136, 200))
# Rows cut to multiples of 32 MS pixels too (Shanghai 324 rows, CristianICS 143), for exact full-resolution blocks.
_CRISTIANICS_TRAIN, _CRISTIANICS_TEST = Region("cristianics", (0, 96)), Region("cristianics", (96, 144), (0, 128))
_8BAND_TEST = (Region("wv2", _TEST_COLS), Region("shanghai", _TEST_COLS, (0, 320)), _CRISTIANICS_TEST)
# A 4-band sensor no model trains on: IKONOS simulated from the two real hyperspectral cubes (``datasets``).
_4BAND_UNSEEN = (Region("sim_ikonos_hyspex"), Region("sim_ikonos_aviris"))


SPLITS: Mapping[str, Mapping[str, tuple[Region, ...]]] = MappingProxyType({
    "4band": MappingProxyType({
        "train": (
            *_fusebox_regions("P034R032", "P090R083", "P093R085", "P093R086"),
            Region("landsat8"), Region("ge1", _TRAIN_COLS), Region("wv2", _TRAIN_COLS), *_OSMAN_TRAIN,
            # More VHR sensors and places for a sensor the model never saw: WorldView-3 and CristianICS outside
            # the 8-band test strips, and both SpaceNet-6 Rotterdam WorldView-2 scenes.
            Region("shanghai", _TRAIN_COLS), _CRISTIANICS_TRAIN, Region("rotterdam_1"), Region("rotterdam_2"),
        ),
        "val": _fusebox_regions("P091R083"),
        "test": (*_fusebox_regions("P092R086"), Region("ge1", _TEST_COLS), Region("wv2", _TEST_COLS), _OSMAN_TEST),
        "test_full": (Region("ge1", _TEST_COLS), Region("wv2", _TEST_COLS), _OSMAN_TEST, Region("wv3_example")),
        "unseen": _4BAND_UNSEEN,
    }),
    "8band": MappingProxyType({
        "train": (Region("wv2", _TRAIN_COLS), Region("shanghai", _TRAIN_COLS), _CRISTIANICS_TRAIN),
        "val": (),
        "test": _8BAND_TEST,
        "test_full": (*_8BAND_TEST, Region("wv3_example")),
        "unseen": (),
    }),
    "hs_ms": MappingProxyType({
        "train": (Region("paris_hs_ms", (0, 48)),),
        "val": (),
        "test": (Region("paris_hs_ms", (48, 72)),),
        "test_full": (),
        "unseen": (),
    }),
    "hs_pan": MappingProxyType({
        "train": (Region("paris_hs_pan", rows=(0, 36)),),
        "val": (),
        "test": (Region("paris_hs_pan", rows=(36, 72)),),
        "test_full": (Region("paris_hs_pan", cols=(0, 32), rows=(36, 68)),),
        "unseen": (),
    }),
})


def split_regions(family: str, split: str) -> list[Region]:
    """The regions of one split ("train", "val", "test": reduced resolution; "test_full": full resolution;
    "unseen": reduced resolution, a sensor absent from every training split)."""
    try:
        return list(SPLITS[family][split])
    except KeyError:
        raise ConfigError(f"unknown family/split {family!r}/{split!r}; families {list(SPLITS)}, "
                          f"splits {list(SPLITS['4band'])}") from None

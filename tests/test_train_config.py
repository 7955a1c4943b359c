"""Experiment TOML loading: presets, overrides and errors that name the file and the key."""
from pathlib import Path

import pytest

pytest.importorskip("torch")

from ddrf_runtime.errors import ConfigError  # noqa: E402
from ddrf_runtime.model_spec import Objective  # noqa: E402
from ddrf_train.config import UNET_PRESETS, DataFamily, ExperimentConfig, load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("**/*.toml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_presets_and_size_multiple():
    assert UNET_PRESETS["reference"].size_multiple == 16  # 2^(4−1) · 2
    assert UNET_PRESETS["tiny"].size_multiple == 4
    cfg = ExperimentConfig.from_dict({"model": {"preset": "small", "width": 8}, "train": {"family": "8band"},
                                      "diffusion": {"objective": "v"}})
    assert (cfg.model.width, cfg.model.bands, cfg.model.enc_blocks) == (8, 8, UNET_PRESETS["small"].enc_blocks)
    assert cfg.train.family is DataFamily.EIGHT_BAND and cfg.diffusion.objective is Objective.V


@pytest.mark.parametrize("text, key", [
    ("[train]\nbatchsize = 3\n", "train.batchsize"),
    ("[train]\nbatch = 'eight'\n", "train.batch"),
    ("[train]\npatch = 60\n", "train.patch"),
    ("[model]\nbands = 8\n", "model.bands"),
    ("[model]\npreset = 'huge'\n", "model.preset"),
    ("[model]\nwidth = 30\n", "model.heads"),
    ("[diffusion]\nobjective = 'score'\n", "diffusion.objective"),
    ("[diffusion]\nresidual = 1\n", "diffusion.residual"),
    ("[diffusion]\nformulation = 'regression'\nobjective = 'eps'\n", "diffusion.objective"),
    ("[diffusion]\nbase = 'hpm'\n", "diffusion.base"),
    ("[diffusion]\nbase = 'glp_ratio'\nresidual = false\n", "diffusion.base"),
    ("[diffusion]\nbase_gain = 1.0\n", "diffusion.base_gain"),
    ("[diffusion]\nbase = 'glp_hpm_fit'\ngain_pooling = 2.0\n", "diffusion.gain_pooling"),
    ("[train]\nsam_weight = -1.0\n", "train.sam_weight"),
    ("[train]\nfamily = 'hs_ms'\n[diffusion]\nbase = 'glp_ratio'\n", "diffusion.base"),
    ("[augment]\ngain = 1.5\n", "augment.gain"),
    ("[augment]\nblur = 0.1\n", "augment.blur"),
    ("[trian]\n", "unknown section"),
    ("[train\n", "cannot read config"),
])
def test_errors_name_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and key in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")

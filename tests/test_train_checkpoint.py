"""Checkpoints load with weights_only=True, fail clearly, and --resume continues bit-identically."""
import dataclasses

import pytest

torch = pytest.importorskip("torch")

from ddrf_runtime.evaluation.datasets import Region, reduced_resolution  # noqa: E402
from ddrf_runtime.errors import ConfigError, ModelError  # noqa: E402
from ddrf_train.checkpoint import load_denoiser, read_checkpoint, release, save_checkpoint  # noqa: E402
from ddrf_train.config import load_config  # noqa: E402
from ddrf_train.diffusion import build_denoiser  # noqa: E402
from ddrf_train.train import Trainer, main  # noqa: E402

from .test_train_config import CONFIGS  # noqa: E402


def _cfg(out_dir, iterations=4):
    cfg = load_config(CONFIGS / "tiny_test.toml")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(out_dir), iterations=iterations))


@pytest.fixture(scope="module")
def pairs(data_dir):
    """Two small real GeoEye-1 Wald pairs: (train, val)."""
    return ([reduced_resolution("ge1", 4, Region("ge1", (0, 48), (0, 48)), 4)],
            [reduced_resolution("ge1", 4, Region("ge1", (48, 80), (0, 32)), 4)])


def test_round_trip_with_weights_only(tmp_path):
    cfg = _cfg(tmp_path)
    model = build_denoiser(cfg)
    ema = build_denoiser(cfg)
    path = tmp_path / "c.pt"
    save_checkpoint(path, config=cfg, model=model, ema=ema, step=7)
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 7 and raw["config"] == cfg.to_dict()
    loaded, loaded_cfg, _ = load_denoiser(path)
    assert loaded_cfg == cfg
    for k, v in ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        read_checkpoint(bad)
    torch.save({"step": 1}, bad)
    with pytest.raises(ModelError, match="not a ddrf checkpoint"):
        read_checkpoint(bad)
    cfg = _cfg(tmp_path)
    save_checkpoint(bad, config=cfg, model=build_denoiser(cfg), ema=build_denoiser(cfg), step=0)
    payload = torch.load(bad, weights_only=True)
    payload["config"]["model"]["width"] = -1
    torch.save(payload, bad)
    with pytest.raises(ConfigError, match="model.width"):
        read_checkpoint(bad)


def _state(trainer):
    return {**{f"m.{k}": v for k, v in trainer.model.state_dict().items()},
            **{f"e.{k}": v for k, v in trainer.ema.model.state_dict().items()}}


def test_resume_is_bit_identical(tmp_path, pairs):
    straight = Trainer(_cfg(tmp_path / "a", 4), *pairs)
    straight.run(progress=False)

    Trainer(_cfg(tmp_path / "b", 2), *pairs).run(progress=False)
    resumed = Trainer(_cfg(tmp_path / "b", 4), *pairs)
    resumed.resume(tmp_path / "b" / "last.pt")
    assert resumed.step == 2
    resumed.run(progress=False)

    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert (tmp_path / "b" / "best.pt").exists() and resumed.best_ergas == straight.best_ergas


def test_resume_refuses_a_different_model(tmp_path, pairs):
    Trainer(_cfg(tmp_path, 2), *pairs).run(progress=False)
    cfg = _cfg(tmp_path)
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=4))
    with pytest.raises(ConfigError, match=r"\[model\] differs"):
        Trainer(other, *pairs).resume(tmp_path / "last.pt")


def test_cli_reports_errors(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.toml")]) == 2
    assert "ddrf-train: error:" in capsys.readouterr().err


def test_release_keeps_only_the_ema_weights(tmp_path):
    """The release copy loads like a checkpoint, holds the EMA weights, and drops optimizer/RNG state."""
    config = load_config(CONFIGS / "tiny_test.toml")
    torch.manual_seed(0)
    model, ema = build_denoiser(config), build_denoiser(config)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "full.pt", config=config, model=model, ema=ema, step=7, optimizer=opt)
    release(tmp_path / "full.pt", tmp_path / "rel.pt")
    loaded, _, payload = load_denoiser(tmp_path / "rel.pt")
    assert payload["step"] == 7 and payload["optimizer"] is None and payload["rng"] is None
    for a, b in zip(ema.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    raw, _, _ = load_denoiser(tmp_path / "rel.pt", use_ema=False)
    for a, b in zip(ema.state_dict().values(), raw.state_dict().values()):
        assert torch.equal(a, b)


def test_init_starts_from_a_checkpoints_ema_weights_with_a_fresh_run(tmp_path, pairs):
    """``train.init`` (fine-tuning, e.g. onto another residual base): the EMA weights, step 0, same [model] only."""
    cfg = _cfg(tmp_path / "a")
    source = build_denoiser(cfg)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ckpt = tmp_path / "source.pt"
    save_checkpoint(ckpt, config=cfg, model=build_denoiser(cfg), ema=source, step=9)
    tuned = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init=str(ckpt)))
    trainer = Trainer(tuned, *pairs)
    assert trainer.step == 0
    for k, v in source.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[k], v) and torch.equal(trainer.ema.model.state_dict()[k], v)
    other = dataclasses.replace(tuned, model=dataclasses.replace(cfg.model, width=cfg.model.width * 2))
    with pytest.raises(ConfigError, match="cannot initialise"):
        Trainer(other, *pairs)

"""Leave-one-sensor-out bookkeeping: no held-out pixel trains, fold configs are the stated budget, ratios."""
from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from benchmarks import generalization as gen  # noqa: E402
from ddrf_train.config import load_config  # noqa: E402


@pytest.mark.parametrize("fold", list(gen.FOLDS))
def test_held_out_sensor_never_trains(data_dir, fold):
    train = gen.training_scenes(fold)
    held = gen.FOLDS[fold]
    assert train and set(train).isdisjoint(held.scenes)
    assert set(held.test) <= set(held.scenes) and {r.scene for r in held.full} <= set(held.scenes)
    trained = {gen.datasets.load_scene(s).sensor for s in train}
    held_sensors = {gen.datasets.load_scene(s).sensor for s in held.scenes} - {"unknown"}  # unnamed: by scene
    assert trained.isdisjoint(held_sensors)


def test_every_pool_scene_is_in_exactly_one_fold():
    scenes = [s for f in gen.FOLDS.values() for s in f.scenes]
    assert len(scenes) == len(set(scenes))
    assert {"rotterdam_1", "rotterdam_2", "shanghai"} <= set(scenes)


def test_fold_configs_are_the_written_budget_and_differ_only_in_out_dir():
    configs = {f: load_config(gen.CONFIG_DIR / f"{f}.toml") for f in gen.FOLDS}
    first = next(iter(configs.values()))
    for fold, cfg in configs.items():
        assert cfg.train.out_dir == f"runs/loso/{fold}" and cfg.train.val_every == 0
        same = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=first.train.out_dir))
        assert same == first
    base = load_config(gen.BASE_CONFIG)
    assert (first.model, first.diffusion) == (base.model, base.diffusion)
    expect = gen.fold_config(base, "wv2", first.train.iterations, first.train.patch)
    assert configs["wv2"] == expect  # the files are what --write-configs produces


def test_jitter_variant_changes_only_the_augment_section():
    base = gen.variant_config("ge1", gen.VARIANTS[0])
    jit = gen.variant_config("ge1", gen.VARIANTS[1])
    assert jit.augment == gen.JITTER and jit.augment.active and not base.augment.active
    assert (jit.model, jit.diffusion) == (base.model, base.diffusion)
    assert jit.train == dataclasses.replace(base.train, out_dir=base.train.out_dir + "_jitter")


def test_summary_ratios_use_the_best_classical_method_per_metric():
    def row(e, s, h):
        return {"ERGAS": e, "SAM": s, "Q2n": 0.9, "HQNR": h}
    reduced = {"a": {"GSA": row(2.0, 3.0, 0.8), "EXP": row(4.0, 2.0, 0.5), "DDRF": row(1.0, 3.0, 0.9)},
               "b": {"GSA": row(4.0, 3.0, 0.8), "EXP": row(6.0, 2.0, 0.5), "DDRF": row(2.0, 1.0, 0.9)}}
    full = {"c": {"GSA": row(0, 0, 0.8), "EXP": row(0, 0, 0.6), "DDRF": row(0, 0, 0.85)}}
    s = gen.summarise(reduced, full, ["DDRF"])
    assert s["best_classical"] == {"ERGAS": "GSA", "SAM": "EXP", "HQNR": "GSA"}
    assert s["ratio_to_best"]["DDRF"] == pytest.approx({"ERGAS": 1.5 / 3.0, "SAM": 2.0 / 2.0})
    assert s["mean"]["DDRF"]["HQNR"] == pytest.approx(0.85)


def test_seen_control_trains_on_every_sensor_in_one_shared_run():
    seen = next(v for v in gen.VARIANTS if v.sees_held_out)
    assert {gen.variant_config(f, seen).train.out_dir for f in gen.FOLDS} == {"runs/loso/all_sensors"}
    every = gen.training_scenes(None)
    assert set(every) >= set(gen.FOLDS["osman"].scenes) | set(gen.FOLDS["wv2"].scenes)
    assert set(gen.training_scenes("osman")) == set(every) - {"osman"}


def test_a_packed_fold_trains_elsewhere_on_exactly_its_config_and_scenes(data_dir, tmp_path):
    """``--pack``: the variant's config round-trips through its TOML, the pairs are the fold's training scenes
    (none of the held-out sensor) and come back as the readers make them."""
    variant = next(v for v in gen.VARIANTS if v.name == "hpm_fit_pool_jitter_pan")
    folder = gen.pack_for_box("osman", variant, tmp_path / "osman_pan")
    assert load_config(folder / "config.toml") == gen.variant_config("osman", variant)
    back = gen.packed.load(folder / "pairs.npz")
    assert [p.name for p in back.train] == gen.variant_scenes("osman", variant) and back.val == []
    assert not set(gen.variant_scenes("osman", variant)) & set(gen.FOLDS["osman"].scenes)
    made = gen._pair(back.train[0].name)
    assert all(gen.np.array_equal(getattr(back.train[0], f), getattr(made, f)) for f in ("gt", "pan", "ms_lr"))


def test_a_checkpoint_is_scored_for_one_fold_and_one_variant_only(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        gen.main(["--folds", "osman", "wv3", "--variants", "base", "--checkpoint", str(tmp_path / "x.pt")])
    assert exit_.value.code == 2 and "one fold and one variant" in capsys.readouterr().err

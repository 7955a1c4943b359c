"""The benchmark helpers whose numbers the results rest on: FLOP counting and the memory mosaics."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
rasterio = pytest.importorskip("rasterio")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ddrf_runtime.target import Base  # noqa: E402

from benchmarks.memory import mirror_tile, write_mosaic  # noqa: E402
from benchmarks.roofline import onnx_flops, torch_flops  # noqa: E402

# Hand counts, 2 FLOPs per multiply-add.
CONV = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # out (1, 4, 8, 8), weight (4, 3, 3, 3)
GROUPED_CONV = 2 * (4 * 4 * 4) * (2 * 1 * 1)  # out (1, 4, 4, 4) with stride 2, weight (4, 2, 1, 1), 2 groups
MATMUL = 2 * (2 * 5 * 7) * 6  # (2, 5, 6) @ (6, 7)
GEMM = 2 * (1 * 3) * 6  # (1, 6) @ (3, 6)ᵀ
ATTENTION = 2 * 1 * 2 * 4 * 6 * (8 + 5)  # Q (1, 2, 4, 8), K (1, 2, 6, 8), V (1, 2, 6, 5)


def _graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
            (("w", (4, 3, 3, 3)), ("wg", (4, 2, 1, 1)), ("m", (6, 7)), ("g", (3, 6)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y", "wg"], ["yg"], strides=[2, 2], group=2),
             helper.make_node("MatMul", ["a", "m"], ["am"]),
             helper.make_node("Gemm", ["b", "g"], ["bg"], transB=1),
             helper.make_node("Attention", ["q", "k", "v"], ["att"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
              (("x", (1, 3, 8, 8)), ("a", (2, 5, 6)), ("b", (1, 6)), ("q", (1, 2, 4, 8)), ("k", (1, 2, 6, 8)),
               ("v", (1, 2, 6, 5)))]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("yg", "am", "bg", "att")]
    graph = helper.make_graph(nodes, "hand", inputs, outputs, init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def test_onnx_flops_match_hand_counts() -> None:
    model = _graph()
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    assert onnx_flops(model, feeds) == {"Conv": CONV + GROUPED_CONV, "MatMul": MATMUL, "Gemm": GEMM,
                                        "Attention": ATTENTION}


def test_torch_flops_match_hand_counts_including_cpu_attention() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)

        def forward(self, x, q, k, v):
            return self.conv(x), torch.nn.functional.scaled_dot_product_attention(q, k, v)

    v = torch.randn(1, 2, 6, 8)  # the torch counter assumes dv = d
    counts = torch_flops(Net(), (torch.randn(1, 3, 8, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8), v))
    assert counts == {"convolution": CONV, "_scaled_dot_product_flash_attention_for_cpu": 2 * 1 * 2 * 4 * 6 * 16}


def test_mirror_tile_is_continuous_and_keeps_the_geotransform(tmp_path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    m = mirror_tile(a, 2)
    assert m.shape == (2, 6, 8)
    np.testing.assert_array_equal(m[:, :3, :4], a)
    np.testing.assert_array_equal(m[:, :, 4], m[:, :, 3])  # the seam repeats the edge column
    np.testing.assert_array_equal(m[:, 3], m[:, 2])

    src, dst = tmp_path / "src.tif", tmp_path / "dst.tif"
    transform = rasterio.Affine(2.0, 0.0, 100.0, 0.0, -2.0, 500.0)
    with rasterio.open(src, "w", driver="GTiff", width=4, height=3, count=2, dtype="uint16", crs="EPSG:32649",
                       transform=transform) as ds:
        ds.write(a)
    write_mosaic(src, dst, 2)
    with rasterio.open(dst) as ds:
        assert (ds.width, ds.height, ds.transform, ds.crs.to_epsg()) == (8, 6, transform, 32649)
        np.testing.assert_array_equal(ds.read(), m)


def test_ablation_variants_differ_from_ddrf_in_their_one_switch(tmp_path):
    """Equal budget, one change each: every variant's config equals the DDRF row's except the switch it names."""
    import argparse

    from benchmarks.ablation import BASE_CONFIG, VARIANTS, variant_config
    from ddrf_train.config import load_config

    args = argparse.Namespace(iterations=300, patch=48, threads=1, runs=tmp_path, seed=0)
    base = load_config(BASE_CONFIG)
    configs = {v.name: variant_config(base, v, args).to_dict() for v in VARIANTS}
    reference = configs.pop("ddrf")
    assert reference["train"]["iterations"] == 300 and reference["train"]["patch"] == 48
    expected = {"no_residual": ("diffusion", "residual"), "eps": ("diffusion", "objective"),
                "no_wavelet": ("model", "wavelet_modulation"), "regressor": ("diffusion", "formulation"),
                "ddrf_t_last": ("diffusion", "last_t_prob")}
    assert set(configs) == set(expected)
    for name, config in configs.items():
        changed = {(section, key) for section in config for key in config[section]
                   if config[section][key] != reference[section][key] and key != "out_dir"}
        assert changed == {expected[name]}, name


def test_pipeline_benchmark_stub_run_fuses_the_padded_scene(tmp_path) -> None:
    """benchmarks.pipeline: the scene has the asked size on an exact 4× grid, and the stub run (a fresh process,
    the network swapped for x0 = 0) fuses all of it through the real pipeline."""
    from benchmarks.pipeline import REPO, make_scene, run_scene
    from benchmarks._fixtures import BUNDLED

    scene = make_scene(512, tmp_path / "scenes")
    with rasterio.open(scene / "ms.tif") as ms, rasterio.open(scene / "pan.tif") as pan:
        assert (ms.width, ms.height, pan.width, pan.height) == (128, 128, 512, 512)
        assert pan.transform.a * 4 == pytest.approx(ms.transform.a) and pan.transform.c == ms.transform.c
    run = run_scene(REPO, scene, BUNDLED.with_suffix(".onnx"), True, {"prepare_threads": 2}, None)
    assert run["size"] == [512, 512] and run["providers"] == ["stub (x0 = 0)"]
    assert run["timings_s"]["total"] > 0 and run["timings_s"]["cog"] > 0
    assert run["timings_s"]["process_cpu"] > run["timings_s"]["fuse_and_write"] / 4  # all threads' CPU, counted


def _profiled_graph(path) -> None:
    """Conv → Shape → Reshape back: one float node, one integer (shape) node, one float node."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Shape", ["y"], ["s"], name="shape"),
             helper.make_node("Reshape", ["y", "s"], ["z"], name="reshape")]
    graph = helper.make_graph(nodes, "placed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 8, 8))],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_placement_profile_of_a_cpu_session_names_every_node_once(tmp_path):
    """The smoke path of benchmarks.gpu.placement: a CPU session's profile parsed into nodes, providers and the
    shape-arithmetic split (the Shape node's int64 output), at the level that keeps every node."""
    from benchmarks.gpu.placement import profile

    _profiled_graph(tmp_path / "m.onnx")
    feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    placed = profile(tmp_path / "m.onnx", "disabled", ["CPUExecutionProvider"], feeds, runs=3)
    assert [(n.name, n.op_type, n.provider) for n in placed.nodes] == [
        ("conv", "Conv", "CPUExecutionProvider"), ("shape", "Shape", "CPUExecutionProvider"),
        ("reshape", "Reshape", "CPUExecutionProvider")]
    assert [n.shape_arithmetic for n in placed.nodes] == [False, True, False]
    assert placed.op_types("CPUExecutionProvider", shape=False) == {"Conv", "Reshape"}
    assert placed.memcpy_nodes() == 0 and placed.op_types("CUDAExecutionProvider") == set()


def test_placement_json_from_cuda_events_keeps_the_cuda_ops_schema():
    """Synthetic CUDA-session events (what a GPU profile holds): CPU tensor work and fused types land in 'cpu',
    integer-only CPU nodes and Memcpy do not, and the result has export/cuda_ops.json's keys."""
    import json as _json
    from pathlib import Path

    from benchmarks.gpu.placement import Placement, parse_profile, placement_json

    def event(node, op, provider, dtype):
        return {"cat": "Node", "name": f"{node}_kernel_time", "args": {
            "op_name": op, "provider": provider, "output_type_shape": [{dtype: [1, 4]}]}}
    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    raw = [event("c", "Conv", cuda, "float"), event("n", "InstanceNormalization", cpu, "float"),
           event("m1", "MemcpyToHost", cuda, "float"), event("g", "Gather", cpu, "int64"),
           {"cat": "Node", "name": "c_fence_before", "args": {}}, event("c", "Conv", cuda, "float")]
    fused = [event("q", "QuickGelu", cpu, "float16"), event("c", "Conv", cuda, "float16")]
    placements = [Placement("fp32", "disabled", parse_profile(raw)), Placement("fp16", "all", parse_profile(fused))]
    assert [n.name for n in placements[0].nodes] == ["c", "n", "m1", "g"] and placements[0].memcpy_nodes() == 1
    result = placement_json(placements, {"Conv", "InstanceNormalization", "Gather", "Sqrt"}, "test")
    schema = _json.loads((Path(__file__).resolve().parents[1] / "export" / "cuda_ops.json").read_text())
    assert set(result) == set(schema)
    assert result["cuda"] == ["Conv"]  # the fused level's types never count as raw CUDA types
    assert result["cpu"] == ["InstanceNormalization", "QuickGelu"]
    assert {"Gather", "Sqrt"} <= set(result["cuda_expected"]) and "Conv" not in result["cuda_expected"]


@pytest.mark.parametrize("base", [Base.GLP_HPM, Base.GLP_HPM_FIT])
def test_base_fuser_delivers_the_models_base_of_the_whole_pair(data_dir, base) -> None:
    """The "DDRF base (x0 = 0)" row: the runtime's tiles with a zero network give the base computed on the whole
    pair in one piece (its scene statistics, residual_base), so the row is the classical part of the model."""
    import dataclasses

    from benchmarks._fixtures import BUNDLED
    from benchmarks.quality import base_fuser
    from ddrf_runtime.evaluation.datasets import reduced_resolution
    from ddrf_runtime.detail_base import residual_base
    from ddrf_runtime.pipeline import scene_base
    from ddrf_runtime.session import Denoiser
    from ddrf_runtime.evaluation.splits import Region

    spec = Denoiser(BUNDLED.with_suffix(".onnx"), "cpu").spec
    spec = dataclasses.replace(spec, target=dataclasses.replace(spec.target, base=base))
    pair = reduced_resolution("osman", 4, Region("osman", (0, 192), (0, 160)), 4)
    s = float(pair.full_scale)
    lms = (pair.lms / s).transpose(2, 0, 1).astype(np.float32)  # (C, H, W)
    whole = residual_base(spec.target, lms, (pair.pan / s).astype(np.float32)[None], 4,
                          scene=scene_base(spec.target, pair.ms_lr, pair.pan, 4, s))  # (C, H, W)
    fused = base_fuser(type("Model", (), {"spec": spec})(), projections=0)(pair)  # (H, W, C) DN
    inner = (slice(48, -48), slice(48, -48))  # the scene border pads differently (mirrored tile vs replicate)
    np.testing.assert_allclose((fused / s)[inner], np.clip(whole.transpose(1, 2, 0), 0, 1)[inner], atol=2e-3)
    assert np.abs(fused / s - lms.transpose(1, 2, 0)).max() > 0.02  # it injected detail: not the upsampled MS


def test_trust_scores_the_model_and_its_base_as_the_quality_rows_do(data_dir) -> None:
    """The rows are the quality benchmark's (the model with its correction in full and by default, its base); the
    native λ of the model's correction against the ground truth is what an independent least-squares fit gives."""
    from benchmarks._fixtures import BUNDLED
    from benchmarks.quality import base_fuser, model_fuser
    from benchmarks.trust import score
    from ddrf_runtime.evaluation.datasets import reduced_resolution
    from ddrf_runtime.evaluation.metrics import reduced_resolution_metrics
    from ddrf_runtime.evaluation.splits import Region
    from ddrf_runtime.session import Denoiser
    from ddrf_runtime.trust import Trust

    denoiser = Denoiser(BUNDLED.with_suffix(".onnx"), "cpu")
    pair = reduced_resolution("osman", 4, Region("osman", (136, 200), (0, 64)), 4)
    s = score(denoiser, pair)
    fused = {}
    for way, fuse in (("model", model_fuser(denoiser, trust=Trust.FULL)), ("base", base_fuser(denoiser)),
                      ("fitted", model_fuser(denoiser))):
        fused[way] = fuse(pair).astype(np.float64)
        m = reduced_resolution_metrics(pair.gt, np.clip(fused[way], 0, pair.full_scale), 4, pair.full_scale)
        assert s["rows"][way]["ERGAS"] == pytest.approx(m["ERGAS"], rel=1e-6)
    correction = (fused["model"] - fused["base"]).reshape(-1, 1)
    best = np.linalg.lstsq(correction, (pair.gt - fused["base"]).ravel(), rcond=None)[0][0]
    assert s["best"] == pytest.approx(best, rel=1e-4)
    assert s["rows"]["model"]["ERGAS"] < s["rows"]["base"]["ERGAS"]  # a seen sensor: the correction helps
    assert s["best"] > 0.5
    assert s["fit"] is None and s["weight"] == 1.0  # 16² MS pixels: too small to fit one scale down


def test_trust_at_full_resolution_keeps_a_seen_scenes_correction(data_dir) -> None:
    """A whole seen scene at its own resolution fits λ one scale down at the scale the model trained at (near 1),
    so the runtime keeps the correction in full; a scene of another ratio is skipped, not mis-fused."""
    from benchmarks._fixtures import BUNDLED
    from benchmarks.trust import full_resolution_fits
    from ddrf_runtime.session import Denoiser
    from ddrf_runtime.trust import TRUST_FIT

    rows = full_resolution_fits(Denoiser(BUNDLED.with_suffix(".onnx"), "cpu"), ["osman", "landsat8"])
    assert list(rows) == ["osman"]  # Landsat-8's PAN is 2× its MS: not a ratio-4 scene
    assert rows["osman"]["ms_pixels"] == [200, 200]
    assert rows["osman"]["fit"] > 2 * TRUST_FIT and rows["osman"]["weight"] == 1.0


def test_quality_on_the_unseen_split_scores_its_scenes_at_reduced_resolution_only(data_dir) -> None:
    from benchmarks._report import environment
    from benchmarks.quality import classical_fuser, evaluate, to_markdown

    res = evaluate("4band", {"EXP": classical_fuser("EXP"), "GSA": classical_fuser("GSA")}, "unseen")
    assert list(res["reduced"]) == ["sim_ikonos_hyspex", "sim_ikonos_aviris"] and res["full"] == {}
    assert 0 < res["reduced_mean"]["GSA"]["ERGAS"][0] < res["reduced_mean"]["EXP"]["ERGAS"][0]
    text = to_markdown(res, environment("quality", [], ("numpy",)))
    assert "absent from every training split" in text and "Full resolution" not in text

"""ONNX export: graph structure, linear-memory cross-attention, parity with PyTorch, dynamic shapes,
metadata, the fp16 artifact, CLI errors, and the torch backend against the exported graph.

One tiny model (configs/tiny_test.toml, four levels) with randomised weights is exported once for the module:
zero-initialised output layers would make every parity check trivially exact.
"""
import dataclasses
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

import onnxruntime as ort  # noqa: E402
import rasterio  # noqa: E402

from ddrf_runtime.backends import Backend  # noqa: E402
from ddrf_runtime.evaluation.datasets import Region, load_scene, reduced_resolution  # noqa: E402
from ddrf_runtime.model_spec import METADATA_KEY, ModelSpec  # noqa: E402
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays  # noqa: E402
from ddrf_runtime.scene import SceneConfig, fuse_scene  # noqa: E402
from ddrf_runtime.session import Denoiser as OnnxDenoiser, Device, split_paths  # noqa: E402
from ddrf_runtime.target import Base  # noqa: E402
from ddrf_train.backend import TorchDenoiser  # noqa: E402
from ddrf_train.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from ddrf_train.config import load_config  # noqa: E402
from ddrf_train.diffusion import build_denoiser  # noqa: E402
from ddrf_train.spec import build_spec  # noqa: E402
from export.check import CHECK_SIZES, call_diffs, real_patches, sampling_diff  # noqa: E402
from export.to_onnx import (FP16_CALL_TOL, FP32_CALL_TOL, SPLIT_CALL_TOL, fp16_path, main, op_counts,  # noqa: E402
                            ort_op_counts)

from .test_train_config import CONFIGS  # noqa: E402

# tiny_test.toml with four levels: self-attention runs at H/8, so 4×320×256 stays ~50 MB (at two levels, H/2,
# its N² scores would need ~13 GB).
_TINY = load_config(CONFIGS / "tiny_test.toml")
CFG = dataclasses.replace(_TINY, model=dataclasses.replace(_TINY.model, channel_mults=(1, 1, 2, 2))).validate()
SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    """TorchDenoiser(threads=1) sets torch's process-wide thread count: give it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, fp32 .onnx, fp16 .onnx) of a tiny randomised model, exported through the CLI with the split
    graphs beside each (the runtime takes them unless told ``split=False``)."""
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model, ema = build_denoiser(CFG), build_denoiser(CFG)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ckpt = d / "tiny.pt"
    save_checkpoint(ckpt, config=CFG, model=model, ema=ema, step=4)
    out = d / "tiny.onnx"
    assert main([str(ckpt), "-o", str(out), "--fp16", "--split", "--default-steps", "3", "--threads", "1"]) == 0
    return ckpt, out, fp16_path(out)


@pytest.fixture(scope="module")
def backends(exported):
    ckpt, out, _ = exported
    return TorchDenoiser(ckpt, "cpu", 1), OnnxDenoiser(out, "cpu", 1, split=False)


@pytest.fixture(scope="module")
def patches(data_dir):
    """Real held-out patches (64², 96×128, 128×96) from the GeoEye-1 and WorldView-2 test strips."""
    pairs = [reduced_resolution(s, 4, Region(s, (192, 320)), 4) for s in ("ge1", "wv2")]
    found = real_patches(pairs, CFG.model.size_multiple, CHECK_SIZES[:3])
    assert {p.lms.shape[2] == p.lms.shape[3] for p in found} == {True, False}
    return found


def _scopes(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == SCOPES), "")


def test_graph_has_fused_attention_and_softmax_only_in_cross_attention(exported):
    _, out, _ = exported
    graph = onnx.load(out)
    counts = op_counts(graph)
    assert counts["Attention"] >= 1 and counts["GroupNormalization"] == 0
    attention = [_scopes(n) for n in graph.graph.node if n.op_type == "Attention"]
    assert all("mid_attn" in s for s in attention)
    blocks = CFG.model.dec_blocks * CFG.model.levels
    queries = r"net\.dec\.\d+\.\d+\.attn'"  # the query softmax of each block's cross-attention

    def softmax(g):
        return [_scopes(n) for n in g.graph.node if n.op_type == "Softmax"]
    assert len(softmax(graph)) == 2 * blocks and sum(bool(re.search(queries, s)) for s in softmax(graph)) == blocks
    # The split graphs: the key softmax of every block runs once per tile in the encoder, the query one per step.
    encoder, step = (onnx.load(p) for p in split_paths(out))
    assert len(softmax(encoder)) == blocks and "Attention" not in op_counts(encoder)  # self-attention sees x_t
    assert len(softmax(step)) == blocks and all(re.search(queries, s) for s in softmax(step))
    runtime = ort_op_counts(out, 1)  # what ONNX Runtime really runs after its own rewrites
    assert runtime["Attention"] >= 1 and not any(k.endswith("GroupNormalization") for k in runtime)


def test_cross_attention_never_materialises_a_positions_matrix(exported):
    """Run at 256² with every cross-attention intermediate exposed, and bound each one's real size.

    ONNX shape inference alone cannot prove this: its data propagation leaves the flattened-position
    dimension of the computed Reshape targets unknown. The executed shapes are exact. A query-by-key
    matrix at decoder level i has at least N_i·M_i elements (N_i query pixels, M_i wavelet pixels).
    """
    _, out, _ = exported
    side, c, k = 256, CFG.model.bands, CFG.model.guide_bands
    feeds = {"x_t": np.zeros((1, c, side, side), np.float32), "t": np.zeros(1, np.int64),
             "cond": np.zeros((1, c + k, side, side), np.float32),
             "wav": np.zeros((1, c + 3 * k, side // 2, side // 2), np.float32)}
    graph = onnx.load(out)
    for inp in graph.graph.input:  # static input shapes, so inference gives every intermediate its type
        for dim, n in zip(inp.type.tensor_type.shape.dim, feeds[inp.name].shape):
            dim.Clear()
            dim.dim_value = n
    del graph.graph.value_info[:]
    graph = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    types = {v.name: v for v in graph.graph.value_info}
    watched = {}  # output name -> decoder level index j (net.dec.j)
    for node in graph.graph.node:
        if any(p.key == CLASSES and "WaveletCrossAttention" in p.value for p in node.metadata_props):
            j = int(re.search(r"net\.dec\.(\d+)\.", _scopes(node)).group(1))
            watched.update({o: j for o in node.output})
    assert watched.keys() <= types.keys()  # every intermediate is typed, hence can be exposed and measured
    graph.graph.output.extend(types[o] for o in watched)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feeds)))
    levels = CFG.model.levels
    assert set(watched.values()) == set(range(levels))  # every decoder level was inspected
    for name, j in watched.items():
        i = levels - 1 - j
        n_i = (side >> i) ** 2
        m_i = (side >> max(i, 1)) ** 2  # levels 0 and 1 both read wav at H/2
        assert values[name].size < n_i * m_i, (name, values[name].shape)


def test_fp32_parity_on_real_patches(backends, patches):
    diffs = [d for _, _, d in call_diffs(*backends, patches)]
    assert len(diffs) == 3 * len(patches) and max(diffs) <= FP32_CALL_TOL


@pytest.mark.parametrize("batch, rows, cols", [(1, 64, 64), (4, 320, 256)])
def test_one_file_serves_any_batch_and_size(backends, batch, rows, cols):
    torch_den, onnx_den = backends
    c, k = CFG.model.bands, CFG.model.guide_bands
    rng = np.random.default_rng(batch)
    cond = rng.random((batch, c + k, rows, cols), np.float32)
    wav = rng.random((batch, c + 3 * k, rows // 2, cols // 2), np.float32)
    x_t = rng.standard_normal((batch, c, rows, cols), np.float32)
    got = onnx_den.conditioned(cond, wav)(x_t, 17)
    assert got.shape == x_t.shape and got.dtype == np.float32
    assert np.abs(got - torch_den.conditioned(cond, wav)(x_t, 17)).max() <= FP32_CALL_TOL


def test_metadata_round_trip_and_runtime_load(exported, backends):
    ckpt, out, fp16 = exported
    payload, config = read_checkpoint(ckpt)
    expected = build_spec(config, payload, ckpt, default_steps=3)
    stored = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert ModelSpec.from_json(stored[METADATA_KEY]) == expected
    assert expected.bands == ("B", "G", "R", "NIR") and expected.ratio == 4 and expected.default_bit_depth == 11
    assert expected.checkpoint_sha256 and expected.default_steps == 3
    assert "4band train split" in expected.training_data
    assert backends[1].spec == expected and OnnxDenoiser(fp16, "cpu", 1).spec == expected
    assert backends[0].spec == build_spec(config, payload, ckpt)  # the torch backend: export defaults


def test_fp16_artifact_runs_within_tolerance(exported, backends, patches):
    fp16 = OnnxDenoiser(exported[2], "cpu", 1)
    assert {i.type for i in fp16.session.get_inputs() if i.name != "t"} == {"tensor(float)"}
    inits = {i.data_type for i in onnx.load(exported[2]).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in inits
    assert max(d for _, _, d in call_diffs(backends[0], fp16, patches[:2])) <= FP16_CALL_TOL


@pytest.mark.parametrize("content", [None, b"not a checkpoint"], ids=["missing", "garbage"])
def test_bad_checkpoint_is_a_one_line_error(tmp_path, capsys, content):
    ckpt = tmp_path / "bad.pt"
    if content is not None:
        ckpt.write_bytes(content)
    assert main([str(ckpt), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"export.to_onnx: error: {ckpt}: ")
    assert not (tmp_path / "x.onnx").exists() and sorted(p.name for p in tmp_path.iterdir()) == (
        ["bad.pt"] if content else [])


def _scene_crop():
    """A real 32×32-pixel MS (DN) and its 128×128 PAN from the GeoEye-1 test strip."""
    scene = load_scene("ge1")
    return scene.ms[40:72, 200:232], scene.pan[160:288, 800:928], scene.bit_depth


def test_torch_backend_and_onnx_fuse_arrays_the_same(backends, data_dir):
    ms, pan, bits = _scene_crop()
    options = FuseOptions(steps=2, tile=64, overlap=16, batch=3, bit_depth=bits)
    fused = [fuse_arrays(ms, pan, den, options) for den in backends]
    assert np.abs(fused[0] - fused[1]).max() / (2.0**bits - 1) <= 1e-3  # normalised units


def test_torch_backend_keeps_its_thread_count_after_numba(backends):
    """numba's OpenMP layer resets torch's process-wide thread count on its first parallel call."""
    torch_backend = backends[0]
    torch.set_num_threads(2)  # what numba's first parallel region does on this 2-core box
    cond, wav = np.zeros((1, 5, 16, 16), np.float32), np.zeros((1, 7, 8, 8), np.float32)
    torch_backend.conditioned(cond, wav)(np.zeros((1, 4, 16, 16), np.float32), 3)
    assert torch.get_num_threads() == 1


def test_torch_backend_and_onnx_fuse_a_scene_the_same(exported, demo_crop, tmp_path):
    """``ddrf-run --backend torch --model x.pt`` and the exported .onnx differ in the network alone."""
    ckpt, out, _ = exported
    fuse = FuseOptions(steps=2, tile=64, overlap=16, batch=3)
    images = []
    for backend, model in ((Backend.TORCH, ckpt), (Backend.ONNX, out)):
        dst = tmp_path / f"{backend.value}.tif"
        report = fuse_scene(*demo_crop, dst, SceneConfig(model=str(model), backend=backend, device=Device.CPU,
                                                         fuse=fuse, threads=1))
        with rasterio.open(dst) as ds:
            images.append(ds.read().astype(np.float64))
    assert report["providers"] == ["CPUExecutionProvider"]
    assert np.abs(images[0] - images[1]).max() / (2.0 ** report["bit_depth"] - 1) <= 1e-3


def _placement() -> dict:
    import json
    from pathlib import Path
    return json.loads((Path(__file__).resolve().parents[1] / "export" / "cuda_ops.json").read_text())


@pytest.mark.parametrize("part", [0, 1, 2], ids=["monolithic", "cond", "step"])
@pytest.mark.parametrize("artifact", [1, 2], ids=["fp32", "fp16"])
def test_every_exported_op_runs_on_the_cuda_provider(exported, artifact, part):
    """The op set measured on a GPU (export/cuda_ops.json): an op ONNX Runtime ran on its CPU EP inside a CUDA
    session (InstanceNormalization: 88 host round trips per call) must never come back, and a new op type
    must be placed on a device before it ships."""
    placement = _placement()
    ops = set(op_counts(onnx.load([exported[artifact], *split_paths(exported[artifact])][part])))
    on_cpu = ops & set(placement["cpu"])
    unknown = ops - set(placement["cuda"]) - set(placement["cuda_expected"])
    assert not on_cpu, f"ops that ran on the CPU EP of a CUDA session: {sorted(on_cpu)}"
    assert not unknown, f"ops with no measured or expected CUDA placement: {sorted(unknown)}"


def test_group_norm_translation_matches_torch_at_the_scale_of_a_real_tile():
    """The primitive-op GroupNorm (ReduceMean/Sub/Mul/Sqrt/Reciprocal) equals torch's on a 64×256² input, where
    one group holds 4 M values, with and without the affine, for one and several groups."""
    from export.to_onnx import group_norm as translation

    class Norms(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.one = torch.nn.GroupNorm(1, 64)
            self.four = torch.nn.GroupNorm(4, 64, affine=False)
            with torch.no_grad():
                self.one.weight.uniform_(0.5, 1.5)
                self.one.bias.uniform_(-0.5, 0.5)

        def forward(self, x):
            return self.one(x), self.four(x)

    torch.manual_seed(0)
    model = Norms().eval()
    x = 3.0 * torch.randn(2, 64, 256, 256) + 1.5
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=23, input_names=["x"],
                                custom_translation_table={torch.ops.aten.group_norm.default: translation})
    assert "InstanceNormalization" not in op_counts(program.model_proto)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = model(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=2e-5, rtol=0)


def test_fp32_parity_at_the_runtime_tile_size(backends, patches):
    """The export's --check also compares a 512² tile (the runtime's tile), mirrored out of a real patch: the test
    strips hold at most 256×128, and reduction drift over whole feature maps only shows at the real size."""
    from export.check import tile_patch

    tile = tile_patch(patches, 512)
    assert tile.lms.shape[2:] == (512, 512) and tile.guide.shape[2:] == (512, 512)
    base = max(patches, key=lambda p: p.lms[0, 0].size)
    h, w = base.lms.shape[2:]
    np.testing.assert_array_equal(tile.lms[:, :, :h, :w], base.lms)  # real pixels, mirrored beyond
    worst = max(diff for _, _, diff in call_diffs(*backends, [tile]))
    assert worst <= FP32_CALL_TOL, worst


@pytest.fixture(scope="module")
def split_denoiser(exported):
    den = OnnxDenoiser(exported[1], "cpu", 1)
    assert den.versions["model_graphs"] == "split (cond + step)"
    return den


@pytest.mark.parametrize("tiles, samples, rows, cols", [(1, 1, 64, 64), (2, 3, 96, 128)])
def test_split_graphs_equal_the_monolithic_graph(backends, split_denoiser, tiles, samples, rows, cols):
    """Encoder once + step graph on B·N rows (sample s of tile i at row i·N + s) against the monolithic graph fed
    each tile's condition N times, and against PyTorch's own split."""
    torch_den, onnx_den = backends
    c, k = CFG.model.bands, CFG.model.guide_bands
    rng = np.random.default_rng(tiles)
    cond = rng.random((tiles, c + k, rows, cols), np.float32)
    wav = rng.random((tiles, c + 3 * k, rows // 2, cols // 2), np.float32)
    split = split_denoiser.conditioned(cond, wav, samples)
    for t in (49, 0):
        x_t = rng.standard_normal((tiles * samples, c, rows, cols), np.float32)
        got = split(x_t, t)
        mono = onnx_den(x_t, t, np.repeat(cond, samples, 0), np.repeat(wav, samples, 0))
        assert got.shape == x_t.shape and np.abs(got - mono).max() <= SPLIT_CALL_TOL["fp32"]
        assert np.abs(got - torch_den.conditioned(cond, wav, samples)(x_t, t)).max() <= FP32_CALL_TOL


def test_split_graphs_fuse_arrays_like_the_monolithic_graph(backends, split_denoiser, data_dir):
    """Several samples and steps through the runtime: the split pair changes the arithmetic, not the image."""
    ms, pan, bits = _scene_crop()
    options = FuseOptions(steps=2, samples=2, tile=64, overlap=16, batch=4, bit_depth=bits)
    mono, split = (fuse_arrays(ms, pan, den, options) for den in (backends[1], split_denoiser))
    assert np.abs(mono - split).max() / (2.0**bits - 1) <= 2e-6  # normalised units (measured 2.4e-7)


def test_a_stale_split_pair_is_ignored_with_a_warning(exported, tmp_path, caplog):
    """Split graphs from another export (other metadata) must not stand in for the model beside them."""
    _, out, _ = exported
    model = tmp_path / "m.onnx"
    model.write_bytes(out.read_bytes())
    for src, dst in zip(split_paths(out), split_paths(model)):
        graph = onnx.load(src)
        stale = ModelSpec.from_json(next(p.value for p in graph.metadata_props if p.key == METADATA_KEY))
        onnx.helper.set_model_props(graph, {METADATA_KEY: dataclasses.replace(stale, default_steps=7).to_json()})
        onnx.save(graph, dst)
    with caplog.at_level("WARNING", logger="ddrf_runtime.session"):
        den = OnnxDenoiser(model, "cpu", 1)
    assert den.versions["model_graphs"] == "monolithic"
    assert "not using m.cond.onnx and m.step.onnx: its metadata differs" in caplog.text


def test_split_graphs_through_io_binding(split_denoiser):
    """The CUDA path's binding of the encoder's outputs into the step graph, exercised on CPU memory."""
    c, k = CFG.model.bands, CFG.model.guide_bands
    rng = np.random.default_rng(3)
    cond, wav = rng.random((2, c + k, 64, 64), np.float32), rng.random((2, c + 3 * k, 32, 32), np.float32)
    bound, plain = split_denoiser._conditioned(cond, wav, 2, bind="cpu"), split_denoiser.conditioned(cond, wav, 2)
    for t in (49, 0):  # the x_t buffer is updated in place between steps
        x_t = rng.standard_normal((4, c, 64, 64), np.float32)
        np.testing.assert_array_equal(bound(x_t, t), plain(x_t, t))


@pytest.mark.parametrize("base", [Base.GLP_RATIO, Base.GLP_HPM_FIT])
def test_glp_base_model_exports_checks_and_fuses_alike_in_both_backends(tmp_path, data_dir, base):
    """The base travels in the metadata, and torch (reference sampler and backend) and ONNX add x0 to the same base
    (GLP_HPM_FIT: with the scene statistics of the patch's whole pair, which the export check needs)."""
    cfg = dataclasses.replace(CFG, diffusion=dataclasses.replace(CFG.diffusion, base=base)).validate()
    torch.manual_seed(1)
    model, ema = build_denoiser(cfg), build_denoiser(cfg)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ckpt, out = tmp_path / "glp.pt", tmp_path / "glp.onnx"
    save_checkpoint(ckpt, config=cfg, model=model, ema=ema, step=4)
    assert main([str(ckpt), "-o", str(out), "--threads", "1"]) == 0
    dens = TorchDenoiser(ckpt, "cpu", 1), OnnxDenoiser(out, "cpu", 1)
    assert dens[1].spec.target.base is base and dens[0].spec == dens[1].spec
    pair = reduced_resolution("ge1", 4, Region("ge1", (192, 256)), 4)
    patch = real_patches([pair], 16, [(64, 64)], target=dens[1].spec.target)[0]
    assert np.abs(patch.base - patch.lms).max() > 0.01  # detail injected with the pair's own statistics
    assert sampling_diff(ema.eval(), dens[1], patch, steps=2) <= 1e-4  # the export's --check comparison
    ms, pan, bits = _scene_crop()
    options = FuseOptions(steps=2, tile=64, overlap=16, batch=3, bit_depth=bits)
    fused = [fuse_arrays(ms, pan, den, options) for den in dens]
    assert np.abs(fused[0] - fused[1]).max() / (2.0**bits - 1) <= 1e-3

"""Tiny synthetic ONNX denoisers that follow the network I/O contract (docs/ARCHITECTURE.md), for tests.

Kinds: ``zero`` (x0 = 0, so fused == lms), ``time`` (x0 = t: reveals the timestep given), ``wav``
(x0 read from the wavelet input: depends on the conditions only), ``noisy`` (``wav`` + 0.1·x_t: depends on the
noise, hence on the seed).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper

from ddrf_runtime.model_spec import METADATA_KEY, ModelSpec

SPEC = ModelSpec(bands=("B", "G", "R", "NIR"), guide_bands=1, ratio=4, size_multiple=8, timesteps=50,
                 default_steps=3, default_bit_depth=11, opset=17)
# The bundled demo scene's model shape (4 bands, ratio 4, UNet multiple 16).
DEMO_SPEC = ModelSpec(bands=("B", "G", "R", "NIR"), guide_bands=1, ratio=4, size_multiple=16, timesteps=100,
                      default_steps=2, default_bit_depth=11, opset=17)
FROM_SPEC = "from spec"


def _const(name, value, dtype=np.float32):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value, dtype), name))


def _nodes(kind, c):
    """Graph body from fp32 inputs x_t, t, cond, wav (``c`` MS bands) to the fp32 output 'y'."""
    zero = [_const("zero", 0.0), helper.make_node("Mul", ["x_t", "zero"], ["y"])]
    if kind == "zero":  # x0 = 0: fused == lms
        return zero
    if kind == "time":  # x0 = t everywhere: reveals the timestep the network was given
        return [_const("zero", 0.0), _const("shape", [-1, 1, 1, 1], np.int64),
                helper.make_node("Mul", ["x_t", "zero"], ["xz"]),
                helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
                helper.make_node("Reshape", ["tf", "shape"], ["tb"]),
                helper.make_node("Add", ["xz", "tb"], ["y"])]
    if kind in ("wav", "noisy"):  # x0 = mean of lms over 2×2 blocks + cH of the guide, both read from wav
        nodes = [_const("s0", [0], np.int64), _const("sC", [c], np.int64), _const("sC1", [c + 1], np.int64),
                 _const("ax", [1], np.int64), _const("scales", [1.0, 1.0, 2.0, 2.0]), _const("half", 0.5),
                 helper.make_node("Resize", ["wav", "", "scales"], ["up"], mode="nearest"),
                 helper.make_node("Slice", ["up", "s0", "sC", "ax"], ["ca"]),
                 helper.make_node("Slice", ["up", "sC", "sC1", "ax"], ["ch"]),
                 helper.make_node("Mul", ["ca", "half"], ["mean"])]
        if kind == "wav":
            return nodes + [helper.make_node("Add", ["mean", "ch"], ["y"])]
        return nodes + [_const("tenth", 0.1), helper.make_node("Add", ["mean", "ch"], ["det"]),  # ... + 0.1·x_t
                        helper.make_node("Mul", ["x_t", "tenth"], ["xs"]),
                        helper.make_node("Add", ["det", "xs"], ["y"])]
    raise ValueError(kind)


def make_model(path, kind="zero", *, spec=SPEC, metadata=FROM_SPEC, io=TensorProto.FLOAT, fp16_body=False):
    """Write an ONNX denoiser for ``spec``'s shapes; ``io`` is the dtype of x_t/cond/wav and the output.

    ``metadata``: the JSON stored under METADATA_KEY — ``spec``'s by default, None for none.
    """
    c, k = spec.num_bands, spec.guide_bands
    nodes, pre = _nodes(kind, c), []
    if io != TensorProto.FLOAT or fp16_body:  # the body computes in fp32: cast the inputs, rounding to fp16
        for n in ("x_t", "cond", "wav"):
            pre += [helper.make_node("Cast", [n], [f"{n}16"], to=TensorProto.FLOAT16),
                    helper.make_node("Cast", [f"{n}16"], [f"{n}32"], to=TensorProto.FLOAT)]
        for node in nodes:
            node.input[:] = [f"{i}32" if i in ("x_t", "cond", "wav") else i for i in node.input]
        post = [helper.make_node("Cast", ["y"], ["y16"], to=TensorProto.FLOAT16),
                helper.make_node("Cast", ["y16"], ["x0"], to=io)]
    else:
        post = [helper.make_node("Identity", ["y"], ["x0"])]
    dims = ["B", c, "H", "W"]
    inputs = [helper.make_tensor_value_info("x_t", io, dims),
              helper.make_tensor_value_info("t", TensorProto.INT64, ["B"]),
              helper.make_tensor_value_info("cond", io, ["B", c + k, "H", "W"]),
              helper.make_tensor_value_info("wav", io, ["B", c + 3 * k, "h", "w"])]
    graph = helper.make_graph(pre + nodes + post, kind, inputs, [helper.make_tensor_value_info("x0", io, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata is not None:
        helper.set_model_props(model, {METADATA_KEY: spec.to_json() if metadata is FROM_SPEC else metadata})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)

"""int8 matrix products for an exported fp32 ONNX graph: one scale per token, per channel.

Every MatMul with a constant weight becomes an integer product, except those whose node name
matches ``KEEP_FP32`` (the classification head). Weights are quantized once, symmetrically,
one scale per output channel. Activations are quantized at run time with one scale and zero
point per token (row), not one per tensor as ONNX Runtime's ``quantize_dynamic`` does:

    x_q = clip(round(x / s) + z, 0, 255)    s = (max(x, 0) - min(x, 0)) / 255, z = round(-min / s)
    y   = (MatMulInteger(x_q, W_q) - z * colsum(W_q)) * s * w_scale

Why per token: one scale for a whole batch lets its largest value (an outlier channel of some
other text) set every text's resolution, so a text's answer depends on the batch it joins,
and it quantized worst exactly where transformers have outliers. Per token, a text answers
the same alone as in any batch, and labels moved half as often on the validation texts
(docs/backends.md). The zero point is subtracted after the product (scalar zero points are all
``MatMulInteger`` takes on the CPU), so GELU outputs, nearly all positive, keep every level.

On x86 CPUs without VNNI, the uint8 x int8 kernels add pairs of products in 16 bits, which
can saturate; weights there keep 7 bits (``reduce_range``), as ONNX Runtime advises.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import numpy as np

# Matrix products left in fp32 (a regular expression on ONNX node names): the head is tiny
# and its output is the answer.
KEEP_FP32 = r"/head/|/classifier/"
_EPS = 1e-8


def reduce_range() -> bool:
    """True where 8-bit weights could saturate the integer kernels: x86 without VNNI."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: the safe range
    return not re.search(r"\b(avx512_vnni|avx_vnni)\b", flags)


def ships_by_default() -> bool:
    """True on an x86 CPU with VNNI: there int8 runs with 8-bit weights, the recipe that
    bench.backends measured to keep the shipped model's answers (docs/backends.md). With 7-bit
    weights (x86 without VNNI) it missed one calibration target, and other CPUs are unmeasured:
    there int8 stays opt-in."""
    machine = platform.machine().lower()
    return machine in ("x86_64", "amd64") and not reduce_range()


def quantize(path: Path, out: Path, *, weight_bits: int = 8) -> Path:
    """Write ``path``'s graph with int8 matrix products to ``out``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    limit = 2 ** (weight_bits - 1) - 1

    def constant(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    zero = constant("q8_zero", np.array(0.0, np.float32))
    levels = constant("q8_levels", np.array(255.0, np.float32))
    eps = constant("q8_eps", np.array(_EPS, np.float32))
    top = constant("q8_top", np.array(255.0, np.float32))
    a_zero = constant("q8_a_zero", np.array(0, np.uint8))
    b_zero = constant("q8_b_zero", np.array(0, np.int8))
    nodes: list = []
    per_token: dict[str, tuple[str, str, str]] = {}  # input -> (uint8, scale, zero point)
    replaced: set[str] = set()
    for original in list(graph.node):
        weight = weights.get(original.input[1]) if (
            original.op_type == "MatMul" and len(original.input) == 2) else None
        if weight is None or len(weight.dims) != 2 or re.search(KEEP_FP32, original.name):
            nodes.append(original)
            continue
        x, name = original.input[0], original.name
        if x not in per_token:  # Q, K and V share one quantized input
            q = f"{name}/q8"
            low = node("Min", [node("ReduceMin", [x], q + "/min", axes=[-1], keepdims=1), zero],
                       q + "/low")
            high = node("Max", [node("ReduceMax", [x], q + "/max", axes=[-1], keepdims=1), zero],
                        q + "/high")
            scale = node("Max", [node("Div", [node("Sub", [high, low], q + "/range"), levels],
                                      q + "/raw_scale"), eps], q + "/scale")
            point = node("Round", [node("Div", [node("Neg", [low], q + "/neg"), scale],
                                        q + "/raw_point")], q + "/point")
            shifted = node("Add", [node("Round", [node("Div", [x, scale], q + "/scaled")],
                                        q + "/rounded"), point], q + "/shifted")
            clipped = node("Clip", [shifted, zero, top], q + "/clipped")
            per_token[x] = (node("Cast", [clipped], q + "/u8", to=TensorProto.UINT8), scale,
                            point)
        codes, scale, point = per_token[x]
        w = numpy_helper.to_array(weight).astype(np.float32)
        w_scale = np.maximum(np.abs(w).max(axis=0), _EPS) / limit
        w_codes = np.clip(np.round(w / w_scale), -limit, limit).astype(np.int8)
        w_q = constant(f"{name}/w_q", w_codes)
        w_sum = constant(f"{name}/w_sum", w_codes.astype(np.float32).sum(axis=0))
        w_s = constant(f"{name}/w_scale", w_scale.astype(np.float32))
        product = node("Cast", [node("MatMulInteger", [codes, w_q, a_zero, b_zero],
                                     f"{name}/i32")], f"{name}/f32", to=TensorProto.FLOAT)
        centred = node("Sub", [product, node("Mul", [point, w_sum], f"{name}/offset")],
                       f"{name}/centred")
        nodes.append(helper.make_node("Mul", [node("Mul", [centred, scale], f"{name}/rows"),
                                              w_s], [original.output[0]]))
        replaced.add(weight.name)
    still_used = {i for n in nodes for i in n.input}
    kept = [init for init in graph.initializer
            if init.name not in replaced or init.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(out))
    return out

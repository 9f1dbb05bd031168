"""dlib's face recognition ResNet as an ONNX graph, converted from dlib's own weights file.

``dlib_face_recognition_resnet_model_v1.dat`` is dlib's ``serialize(net)`` of the ``anet_type`` of
dlib's ``examples/dnn_face_recognition_ex.cpp``. This module reads that binary format itself (no dlib
at conversion time) and writes the same network with ``onnx.helper``, so ONNX Runtime computes the
128-d descriptors instead of dlib's C++ forward pass.

The format, as dlib writes it (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``, ``tensor.h``):

- integers: a control byte (bit 7 = negative, low 4 bits = byte count) then the magnitude,
  little endian; bools are the ASCII bytes ``'1'`` / ``'0'``; strings are an integer length and
  raw bytes; floats are two integers, the mantissa then the exponent (value = m * 2**e);
- tensors: version 2, then (n, k, nr, nc) and n*k*nr*nc raw little-endian float32;
- ``add_loss_layer``: version, the loss, then the subnetwork. ``add_layer`` writes its version,
  then its whole subnetwork, then its own layer details and bookkeeping (flags, gradient buffers);
  ``add_tag_layer`` / ``add_skip_layer`` write only a version and their subnetwork. So the file
  holds all versions top-down, then the input layer, then each layer's details bottom-up.

Tags and skips carry no identity in the file: the wiring comes from ``anet_type`` (``_anet_ops``) and
the file is checked against it layer by layer. Each ``affine`` (per-channel scale and shift) is
folded into the convolution under it. The graph takes ``chips``: uint8 RGB (N, 150, 150, 3), and does
dlib's input step ((pixel - mean[c]) / 256, means read from the file) itself; it outputs
``descriptors``: float32 (N, 128), exactly dlib's net output (not normalised).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faceledger.errors import ModelFileError

CHIP_SIZE = 150
INPUT_NAME, OUTPUT_NAME = "chips", "descriptors"
OPSET = 17

# layer kind -> the version string dlib writes for its details
_DETAIL_NAMES = {"con": "con_4", "affine": "affine_", "relu": "relu_", "max_pool": "max_pool_2",
                 "avg_pool": "avg_pool_2", "add_prev": "add_prev_", "fc": "fc_2"}


def _anet_ops() -> list[tuple[str, int]]:
    """``anet_type`` bottom-up, as (kind, tag id); tag/skip/add_prev use the id, the others 0."""
    block = [("con", 0), ("affine", 0), ("relu", 0), ("con", 0), ("affine", 0)]
    ares = [("tag", 1), *block, ("add_prev", 1), ("relu", 0)]
    ares_down = [("tag", 1), *block, ("tag", 2), ("skip", 1), ("avg_pool", 0), ("add_prev", 2), ("relu", 0)]
    ops = [("con", 0), ("affine", 0), ("relu", 0), ("max_pool", 0)]
    ops += ares * 3                    # alevel4: 3 x ares<32>
    ops += ares_down + ares * 3        # alevel3: ares_down<64>, 3 x ares<64>
    ops += ares_down + ares * 2        # alevel2: 128
    ops += ares_down + ares * 2        # alevel1: 256
    ops += ares_down                   # alevel0: 256
    return ops + [("avg_pool", 0), ("fc", 0)]  # avg_pool_everything, fc_no_bias<128>


class _Reader:
    """dlib's serialization primitives over an in-memory file."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"not a dlib face recognition ResNet file ({what} at byte {self.pos}): {self.source}",
                              file=self.source)

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        control = self.data[self.pos]
        size = control & 0x0F
        if not 1 <= size <= 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # float_details: 32000 inf, 32001 -inf, 32002 nan
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        byte = self.data[self.pos:self.pos + 1]
        if byte not in (b"0", b"1"):
            raise self.fail("bad bool")
        self.pos += 1
        return byte == b"1"

    def string(self) -> str:
        n = self.int()
        text = self.data[self.pos:self.pos + n].decode("latin-1")
        self.pos += n
        return text

    def expect(self, text: str) -> None:
        found = self.string()
        if found != text:
            raise self.fail(f"expected {text!r}, found {found[:40]!r}")

    def tensor(self) -> np.ndarray:
        """A resizable_tensor (version 2: raw little-endian float32), as a flat float32 array."""
        if (version := self.int()) != 2:
            raise self.fail(f"unsupported tensor version {version}")
        count = math.prod(self.int() for _ in range(4))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise self.fail("truncated tensor")
        values = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32)
        self.pos = end
        return values

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor: only its shape is stored."""
        if (version := self.int()) != 1:
            raise self.fail(f"unsupported alias_tensor version {version}")
        return (self.int(), self.int(), self.int(), self.int())


@dataclass
class _Layer:
    kind: str
    tag: int = 0
    weight: np.ndarray | None = None  # con: (O, I, kh, kw); affine: gamma (C,); fc: (in, out)
    bias: np.ndarray | None = None    # con: (O,); affine: beta (C,); fc: (out,) or None
    window: tuple[int, int] = (0, 0)  # con / pools: (nr, nc); 0 = the whole input (avg_pool_everything)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _read_details(r: _Reader, layer: _Layer) -> None:
    r.expect(_DETAIL_NAMES[layer.kind])
    if layer.kind == "con":
        params = r.tensor()
        _num_filters, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        shape, bias_shape = r.alias(), r.alias()
        size = math.prod(shape)
        layer.weight = params[:size].reshape(shape)
        layer.bias = params[size:size + math.prod(bias_shape)]
        layer.window, layer.stride, layer.padding = (nr, nc), (sy, sx), (py, px)
        for _ in range(4):  # learning rate / weight decay multipliers
            r.float()
    elif layer.kind == "affine":
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        if (mode := r.int()) != 0:  # CONV_MODE: one scale and shift per channel
            raise r.fail(f"affine layer in mode {mode}, expected CONV_MODE")
        layer.weight = params[:math.prod(gamma)]
        layer.bias = params[math.prod(gamma):math.prod(gamma) + math.prod(beta)]
    elif layer.kind in ("max_pool", "avg_pool"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        layer.window, layer.stride, layer.padding = (nr, nc), (sy, sx), (py, px)
    elif layer.kind == "fc":
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor()
        weights = r.alias()
        r.alias()  # the biases: none in fc_no_bias
        bias_mode = r.int()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        if math.prod(weights) != num_inputs * num_outputs:
            raise r.fail("fc weight shape")
        layer.weight = params[:num_inputs * num_outputs].reshape(num_inputs, num_outputs)
        layer.bias = params[num_inputs * num_outputs:num_inputs * num_outputs + num_outputs] if bias_mode == 0 else None
        for _ in range(4):
            r.float()


def _parse(data: bytes, source: str) -> tuple[np.ndarray, list[_Layer], dict[str, float]]:
    """The input means (R, G, B) and the layers bottom-up, checked against ``anet_type``."""
    r = _Reader(data, source)
    if r.int() != 1:
        raise r.fail("add_loss_layer version")
    r.expect("loss_metric_2")
    loss = {"margin": r.float(), "distance_threshold": r.float()}
    layers = [_Layer(kind, tag) for kind, tag in _anet_ops()]
    versions = []
    for layer in reversed(layers):  # top-down: every layer writes its version before its subnetwork
        versions.append(r.int())
        wrapper = layer.kind in ("tag", "skip")
        allowed = (1,) if wrapper else (2, 3) if layer is layers[0] else (1, 2)
        if versions[-1] not in allowed:
            raise r.fail(f"version {versions[-1]} for a {layer.kind} layer (the file is not anet_type)")
    versions.reverse()
    r.expect("input_rgb_image_sized")
    means = np.array([r.float() for _ in range(3)], np.float32)
    if (r.int(), r.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail("input size is not 150x150")
    for layer, version in zip(layers, versions):  # bottom-up: each add_layer's details and bookkeeping
        if layer.kind in ("tag", "skip"):
            continue
        _read_details(r, layer)
        for _ in range(3):  # setup called, gradient stale, output disabled
            r.bool()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        if layer is layers[0]:
            r.tensor()  # grad_final
            if version >= 3:
                r.int()  # sample expansion factor
        elif version >= 2:
            r.tensor()  # params_grad
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} bytes left over")
    return means, layers, loss


def _out_size(size: int, window: int, stride: int, pad: int) -> tuple[int, int]:
    """dlib's output size (C++ integer division) and the extra end padding ONNX needs to produce it."""
    out = 1 + int((size + 2 * pad - window) / stride)
    extra = max(0, (out - 1) * stride + window - (size + 2 * pad))
    return out, extra


def _windowed(layer: _Layer, shape: tuple[int, int, int]) -> tuple[dict, tuple[int, int]]:
    """ONNX attributes (kernel, strides, pads) of a convolution or pool, and its output size (rows, columns)
    as dlib computes it: the extra end padding makes ONNX produce that size."""
    (oy, ey), (ox, ex) = (_out_size(shape[d + 1], layer.window[d], layer.stride[d], layer.padding[d]) for d in (0, 1))
    py, px = layer.padding
    return {"kernel_shape": list(layer.window), "strides": list(layer.stride),
            "pads": [py, px, py + ey, px + ex]}, (oy, ox)


def _build(means: np.ndarray, layers: list[_Layer], loss: dict[str, float]) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # dlib's input_rgb_image_sized: (pixel - mean[channel]) / 256, planar RGB
    x = node("Cast", [INPUT_NAME], "input_float", to=TensorProto.FLOAT)
    x = node("Sub", [x, const("input_mean", means)], "input_centred")
    x = node("Mul", [x, const("input_scale", np.array(1 / 256, np.float32))], "input_scaled")
    x = node("Transpose", [x], "input_nchw", perm=[0, 3, 1, 2])
    shape = (3, CHIP_SIZE, CHIP_SIZE)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    i = 0
    while i < len(layers):
        layer, name = layers[i], f"l{i}_{layers[i].kind}"
        if layer.kind == "tag":
            tags[layer.tag] = (x, shape)
        elif layer.kind == "skip":
            x, shape = tags[layer.tag]
        elif layer.kind == "con":
            w, b = layer.weight, layer.bias
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":  # affine(con(x)) = con'(x), exactly
                gamma, beta = layers[i + 1].weight, layers[i + 1].bias
                w, b = w * gamma[:, None, None, None], b * gamma + beta
                i += 1
            attrs, size = _windowed(layer, shape)
            x = node("Conv", [x, const(name + "_w", w), const(name + "_b", b)], name, **attrs)
            shape = (w.shape[0], *size)
        elif layer.kind == "affine":  # not under a convolution: y = x * gamma + beta per channel
            x = node("Mul", [x, const(name + "_g", layer.weight.reshape(-1, 1, 1))], name + "_scaled")
            x = node("Add", [x, const(name + "_b", layer.bias.reshape(-1, 1, 1))], name)
        elif layer.kind == "relu":
            x = node("Relu", [x], name)
        elif layer.kind in ("max_pool", "avg_pool"):
            if layer.window == (0, 0):  # *_pool_everything: one window over the whole input
                x = node("GlobalMaxPool" if layer.kind == "max_pool" else "GlobalAveragePool", [x], name)
                shape = (shape[0], 1, 1)
            else:
                attrs, size = _windowed(layer, shape)
                if layer.kind == "avg_pool":
                    attrs["count_include_pad"] = 0  # dlib averages over the part of the window inside the image
                x = node("MaxPool" if layer.kind == "max_pool" else "AveragePool", [x], name, **attrs)
                shape = (shape[0], *size)
        elif layer.kind == "add_prev":
            # dlib adds tensors of different sizes as if the smaller were zero-padded (bottom/right)
            other, other_shape = tags[layer.tag]
            out = tuple(max(a, b) for a, b in zip(shape, other_shape))
            inputs = []
            for k, (t, s) in enumerate(((x, shape), (other, other_shape))):
                if s != out:
                    pads = np.array([0, 0, 0, 0, 0, *(o - d for o, d in zip(out, s))], np.int64)
                    t = node("Pad", [t, const(f"{name}_pads{k}", pads)], f"{name}_padded{k}")
                inputs.append(t)
            x, shape = node("Add", inputs, name), out
        elif layer.kind == "fc":
            x = node("Flatten", [x], name + "_flat", axis=1)
            if layer.weight.shape[0] != math.prod(shape):
                raise ModelFileError(f"fc layer expects {layer.weight.shape[0]} inputs, the net gives {shape}")
            x = node("MatMul", [x, const(name + "_w", layer.weight)], name if layer.bias is None else name + "_mm")
            if layer.bias is not None:
                x = node("Add", [x, const(name + "_b", layer.bias)], name)
            shape = (layer.weight.shape[1],)
        i += 1
    nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="output"))
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", CHIP_SIZE, CHIP_SIZE, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", shape[0]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceledger",
                              doc_string="dlib_face_recognition_resnet_model_v1 converted from dlib's own weights; "
                                         "input uint8 RGB chips (N,150,150,3) from dlib.get_face_chips(size=150, "
                                         "padding=0.25); output dlib's unnormalised 128-d descriptor")
    model.ir_version = 8  # loadable by ONNX Runtime >= 1.10
    helper.set_model_props(model, {"dlib_loss": "loss_metric_2", **{k: repr(v) for k, v in loss.items()}})
    return model


def convert_bytes(data: bytes, source: str) -> bytes:
    """The serialized ONNX model for the bytes of dlib's ``dlib_face_recognition_resnet_model_v1.dat``.

    Input ``chips``: uint8 (N, 150, 150, 3) RGB face chips. Output ``descriptors``: float32 (N, 128),
    dlib's descriptor as ``compute_face_descriptor`` returns it (not normalised). ``source`` names the
    file in errors. About 0.15 s: done in memory at load time, like the other models' rewrites.
    """
    try:
        model = _build(*_parse(data, source))
    except (ValueError, IndexError, KeyError) as exc:  # shapes that do not fit together: a damaged file
        raise ModelFileError(f"not a dlib face recognition ResNet file ({exc}): {source}", file=source) from exc
    onnx.checker.check_model(model)
    return model.SerializeToString()


def convert(dat_path: Path) -> bytes:
    """:func:`convert_bytes` of a file."""
    path = Path(dat_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}", file=str(path)) from exc
    return convert_bytes(data, str(path))

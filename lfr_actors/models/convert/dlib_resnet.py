"""Convert dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The network is the one defined in dlib's ``examples/dnn_face_recognition_ex.cpp``
(``anet_type``): a 150×150 RGB input, a 7×7/2 convolution stem, 14 residual blocks in five
levels, a global average pool and a 256→128 fully connected layer, trained with
``loss_metric``. :func:`parse_dlib_resnet` reads the file into :class:`DlibResnet`;
:func:`convert_dlib_resnet` turns it into an ONNX model with this contract:

- input ``chips``: uint8 ``[N, 150, 150, 3]``, RGB, HWC, aligned as by dlib's
  ``get_face_chip`` (size 150, padding 0.25);
- output ``embeddings``: float32 ``[N, 128]``, dlib's raw descriptor, **not**
  L2-normalised; dlib compares descriptors by Euclidean distance (same person below the
  file's ``dist_thresh``, 0.6).

dlib writes a network from the outside in: every layer writes a header, then its subnet,
then its own details, so the file holds all headers (loss layer first), then the input
layer, then each layer's details in forward order. Version numbers alone cannot tell the
layer kinds apart, so the reader follows the network's known nesting and confirms each
layer's kind by the name string that starts its details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from lfr_actors.errors import ModelFormatError
from lfr_actors.models.convert.dlib_format import DlibReader

DLIB_RESNET_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
#: Per-channel means (R, G, B) that the file's input layer subtracts; the converter reads
#: them from the file, this copy is for documentation and checks.
DLIB_RESNET_MEANS: tuple[float, float, float] = (122.782, 117.001, 104.298)
DLIB_RESNET_CHIP_SIZE = 150
DLIB_RESNET_EMBEDDING_DIM = 128
INPUT_NAME = "chips"
OUTPUT_NAME = "embeddings"
OPSET = 17
# IR version 8 is the one that goes with opset 17; onnx would otherwise stamp its own,
# newer IR version, which older ONNX Runtime builds refuse to load.
IR_VERSION = 8

F32 = npt.NDArray[np.float32]

# dlib's enums as serialised: affine_ layer_mode and fc_ bias mode.
_AFFINE_CONV_MODE = 0
_FC_HAS_BIAS = 0
_FC_NO_BIAS = 1


@dataclass(frozen=True, eq=False)
class InputLayer:
    """``input_rgb_image_sized``: x = (pixel − mean) / 256 per channel, R, G, B order."""

    means: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True, eq=False)
class ConvLayer:
    """``con_``: cross-correlation with OIHW ``filters`` and optional ``bias``."""

    kind: ClassVar[str] = "con"
    filters: F32
    bias: F32 | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    fused_relu: bool = False


@dataclass(frozen=True, eq=False)
class AffineLayer:
    """``affine_`` in conv mode: y = gamma[c] · x + beta[c]."""

    kind: ClassVar[str] = "affine"
    gamma: F32
    beta: F32


@dataclass(frozen=True)
class ReluLayer:
    """``relu_``."""

    kind: ClassVar[str] = "relu"
    disabled: bool = False


@dataclass(frozen=True)
class PoolLayer:
    """``max_pool_`` or ``avg_pool_``; a window of 0×0 pools over the whole plane."""

    mode: str  # "max" or "avg"
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def kind(self) -> str:
        """``"max_pool"`` or ``"avg_pool"``."""
        return f"{self.mode}_pool"

    @property
    def is_global(self) -> bool:
        """Whether the layer pools over the whole plane (dlib's ``*_pool_everything``)."""
        return self.window == (0, 0)


@dataclass(frozen=True)
class TagLayer:
    """``tagN``: remembers its input for a later ``skipN`` or ``add_prevN``."""

    kind: ClassVar[str] = "tag"
    tag: int


@dataclass(frozen=True)
class SkipLayer:
    """``skipN``: continues from the output of the nearest ``tagN``."""

    kind: ClassVar[str] = "skip"
    tag: int


@dataclass(frozen=True)
class AddPrevLayer:
    """``add_prevN``: adds the output of the nearest ``tagN``, zero-padding to the larger size."""

    kind: ClassVar[str] = "add_prev"
    tag: int


@dataclass(frozen=True, eq=False)
class FcLayer:
    """``fc_``: y = x · weights (+ bias), ``weights`` shaped (num_inputs, num_outputs)."""

    kind: ClassVar[str] = "fc"
    weights: F32
    bias: F32 | None


DlibLayer = (
    ConvLayer | AffineLayer | ReluLayer | PoolLayer | TagLayer | SkipLayer | AddPrevLayer | FcLayer
)


@dataclass(frozen=True, eq=False)
class DlibResnet:
    """The parsed network: input layer, layers in forward order, loss parameters."""

    input: InputLayer
    layers: tuple[DlibLayer, ...]
    margin: float
    dist_thresh: float
    source_sha256: str = field(default="")

    def counts(self) -> dict[str, int]:
        """Number of layers of each kind, e.g. ``{"con": 29, "affine": 29, ...}``."""
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.kind] = out.get(layer.kind, 0) + 1
        return out


# --- the known nesting ----------------------------------------------------------------------

# Layout entries in forward order: (kind, tag id). Kinds "con", "affine", "relu",
# "max_pool", "avg_pool", "fc" are computational layers (add_layer in dlib) that carry
# details; "tag", "skip" carry only a header; "add_prev" is computational with a tag id.
_Slot = tuple[str, int]


def _block() -> list[_Slot]:
    # con, affine, relu, con, affine; the strides come from the file
    return [("con", 0), ("affine", 0), ("relu", 0), ("con", 0), ("affine", 0)]


def _ares() -> list[_Slot]:
    # relu<add_prev1<block<tag1<SUBNET>>>>
    return [("tag", 1), *_block(), ("add_prev", 1), ("relu", 0)]


def _ares_down() -> list[_Slot]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<stride 2, tag1<SUBNET>>>>>>>
    return [
        ("tag", 1),
        *_block(),
        ("tag", 2),
        ("skip", 1),
        ("avg_pool", 0),
        ("add_prev", 2),
        ("relu", 0),
    ]


def _layout() -> list[_Slot]:
    """anet_type of dnn_face_recognition_ex.cpp, from the input to the loss."""
    slots: list[_Slot] = [("con", 0), ("affine", 0), ("relu", 0), ("max_pool", 0)]
    slots += _ares() * 3  # alevel4: 32 filters
    slots += _ares_down() + _ares() * 3  # alevel3: 64
    slots += _ares_down() + _ares() * 2  # alevel2: 128
    slots += _ares_down() + _ares() * 2  # alevel1: 256
    slots += _ares_down()  # alevel0: 256
    slots += [("avg_pool", 0), ("fc", 0)]
    return slots


# --- parsing --------------------------------------------------------------------------------


def _read_input_layer(r: DlibReader) -> InputLayer:
    r.expect_string(("input_rgb_image_sized",), "input layer name")
    means = (
        r.read_float("avg_red of the input layer"),
        r.read_float("avg_green of the input layer"),
        r.read_float("avg_blue of the input layer"),
    )
    rows = r.read_uint("NR of the input layer")
    cols = r.read_uint("NC of the input layer")
    return InputLayer(means=means, rows=rows, cols=cols)


def _split_params(
    r: DlibReader, params: F32, dims: Sequence[tuple[int, int, int, int]], what: str, at: int
) -> list[F32]:
    """Cut a flat params tensor into pieces of the alias tensors' dimensions."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(d)) for d in dims]
    if sum(sizes) != flat.size:
        raise r.error(
            f"{what}: params hold {flat.size} values but its alias tensors "
            f"{[tuple(d) for d in dims]} need {sum(sizes)}",
            at,
        )
    out, start = [], 0
    for d, n in zip(dims, sizes, strict=True):
        out.append(flat[start : start + n].reshape(d))
        start += n
    return out


def _read_multipliers(r: DlibReader, what: str) -> None:
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.read_float(f"{name} of {what}")


def _read_conv(r: DlibReader, what: str) -> ConvLayer:
    at = r.offset
    name = r.expect_string(("con_4", "con_5", "con_6"), f"name of {what}")
    version = int(name[-1])
    params = r.read_tensor(f"params of {what}")
    num_filters = r.read_int(f"num_filters of {what}")
    nr = r.read_int(f"nr of {what}")
    nc = r.read_int(f"nc of {what}")
    stride = (r.read_int(f"stride_y of {what}"), r.read_int(f"stride_x of {what}"))
    padding = (r.read_int(f"padding_y of {what}"), r.read_int(f"padding_x of {what}"))
    filters_dims = r.read_alias_tensor(f"filters alias of {what}")
    bias_dims = r.read_alias_tensor(f"biases alias of {what}")
    _read_multipliers(r, what)
    use_bias = r.read_bool(f"use_bias of {what}") if version >= 5 else True
    use_relu = r.read_bool(f"use_relu of {what}") if version >= 6 else False
    if filters_dims[0] != num_filters or filters_dims[2:] != (nr, nc):
        raise r.error(
            f"{what}: filters {filters_dims} disagree with num_filters={num_filters}, "
            f"nr={nr}, nc={nc}",
            at,
        )
    if min(stride) < 1 or min(padding) < 0:
        raise r.error(f"{what}: bad stride {stride} or padding {padding}", at)
    dims = [filters_dims, bias_dims] if use_bias else [filters_dims]
    pieces = _split_params(r, params, dims, what, at)
    bias = pieces[1].reshape(-1) if use_bias else None
    return ConvLayer(pieces[0], bias, stride, padding, fused_relu=use_relu)


def _read_affine(r: DlibReader, what: str) -> AffineLayer:
    at = r.offset
    name = r.expect_string(("affine_", "affine_2"), f"name of {what}")
    params = r.read_tensor(f"params of {what}")
    gamma_dims = r.read_alias_tensor(f"gamma alias of {what}")
    beta_dims = r.read_alias_tensor(f"beta alias of {what}")
    mode = r.read_int(f"mode of {what}")
    disabled = r.read_bool(f"disabled flag of {what}") if name == "affine_2" else False
    if mode != _AFFINE_CONV_MODE:
        raise r.error(f"{what}: only conv-mode affine layers are supported, found mode {mode}", at)
    gamma, beta = _split_params(r, params, [gamma_dims, beta_dims], what, at)
    gamma, beta = gamma.reshape(-1), beta.reshape(-1)
    if disabled:
        gamma, beta = np.ones_like(gamma), np.zeros_like(beta)
    return AffineLayer(gamma, beta)


def _read_relu(r: DlibReader, what: str) -> ReluLayer:
    name = r.expect_string(("relu_", "relu_2"), f"name of {what}")
    disabled = r.read_bool(f"disabled flag of {what}") if name == "relu_2" else False
    return ReluLayer(disabled)


def _read_pool(r: DlibReader, what: str, mode: str) -> PoolLayer:
    at = r.offset
    r.expect_string((f"{mode}_pool_2",), f"name of {what}")
    window = (r.read_int(f"nr of {what}"), r.read_int(f"nc of {what}"))
    stride = (r.read_int(f"stride_y of {what}"), r.read_int(f"stride_x of {what}"))
    padding = (r.read_int(f"padding_y of {what}"), r.read_int(f"padding_x of {what}"))
    if (0 in window and window != (0, 0)) or min(window) < 0 or min(stride) < 1:
        raise r.error(f"{what}: unsupported window {window} / stride {stride}", at)
    return PoolLayer(mode, window, stride, padding)


def _read_fc(r: DlibReader, what: str) -> FcLayer:
    at = r.offset
    name = r.expect_string(("fc_2", "fc_3"), f"name of {what}")
    num_outputs = r.read_int(f"num_outputs of {what}")
    num_inputs = r.read_int(f"num_inputs of {what}")
    params = r.read_tensor(f"params of {what}")
    weights_dims = r.read_alias_tensor(f"weights alias of {what}")
    bias_dims = r.read_alias_tensor(f"biases alias of {what}")
    bias_mode = r.read_int(f"bias_mode of {what}")
    _read_multipliers(r, what)
    if name == "fc_3":
        r.read_bool(f"use_bias of {what}")
    if bias_mode not in (_FC_HAS_BIAS, _FC_NO_BIAS):
        raise r.error(f"{what}: unknown bias mode {bias_mode}", at)
    has_bias = bias_mode == _FC_HAS_BIAS
    dims = [weights_dims, bias_dims] if has_bias else [weights_dims]
    pieces = _split_params(r, params, dims, what, at)
    weights = pieces[0].reshape(num_inputs, num_outputs)
    bias = pieces[1].reshape(num_outputs) if has_bias else None
    return FcLayer(weights, bias)


def _read_details(r: DlibReader, kind: str, tag: int, what: str) -> DlibLayer:
    if kind == "con":
        return _read_conv(r, what)
    if kind == "affine":
        return _read_affine(r, what)
    if kind == "relu":
        return _read_relu(r, what)
    if kind in ("max_pool", "avg_pool"):
        return _read_pool(r, what, kind.removesuffix("_pool"))
    if kind == "fc":
        return _read_fc(r, what)
    if kind == "add_prev":
        r.expect_string(("add_prev_",), f"name of {what}")
        return AddPrevLayer(tag)
    raise AssertionError(kind)


def _read_layer_trailer(r: DlibReader, version: int, what: str) -> None:
    """What an add_layer writes after its details: state flags and (empty) gradients."""
    r.read_bool(f"this_layer_setup_called of {what}")
    r.read_bool(f"gradient_input_is_stale of {what}")
    r.read_bool(f"get_output_and_gradient_input_disabled of {what}")
    r.read_tensor(f"x_grad of {what}")
    r.read_tensor(f"cached_output of {what}")
    if version == 2:
        r.read_tensor(f"params_grad of {what}")


def _read_input_layer_trailer(r: DlibReader, version: int, what: str) -> None:
    r.read_bool(f"this_layer_setup_called of {what}")
    r.read_bool(f"gradient_input_is_stale of {what}")
    r.read_bool(f"get_output_and_gradient_input_disabled of {what}")
    r.read_tensor(f"x_grad of {what}")
    r.read_tensor(f"cached_output of {what}")
    r.read_tensor(f"grad_final of {what}")
    if version == 3:
        r.read_uint(f"sample expansion factor of {what}")


def parse_dlib_resnet(data: bytes, source: str = DLIB_RESNET_FILENAME) -> DlibResnet:
    """Parse dlib's face recognition ResNet file into :class:`DlibResnet`.

    Raises :class:`~lfr_actors.errors.ModelFormatError`, naming the byte offset, when the
    file does not have exactly the structure of ``dlib_face_recognition_resnet_model_v1``.
    """
    r = DlibReader(data, source=source)
    r.expect_int((1,), "version of the loss layer")
    r.expect_string(("loss_metric_2",), "name of the loss layer")
    margin = r.read_float("margin of the loss layer")
    dist_thresh = r.read_float("dist_thresh of the loss layer")

    slots = _layout()
    names = [f"layer {i + 1} ({kind})" for i, (kind, _) in enumerate(slots)]
    versions: dict[int, int] = {}
    for i in reversed(range(1, len(slots))):
        kind = slots[i][0]
        allowed = (1,) if kind in ("tag", "skip") else (1, 2)
        versions[i] = r.expect_int(allowed, f"version of {names[i]}")
    first_version = r.expect_int((2, 3), f"version of {names[0]}, which sits on the input")
    input_layer = _read_input_layer(r)

    layers: list[DlibLayer] = [_read_details(r, slots[0][0], 0, names[0])]
    _read_input_layer_trailer(r, first_version, names[0])
    for i in range(1, len(slots)):
        kind, tag = slots[i]
        if kind == "tag":
            layers.append(TagLayer(tag))
        elif kind == "skip":
            layers.append(SkipLayer(tag))
        else:
            layers.append(_read_details(r, kind, tag, names[i]))
            _read_layer_trailer(r, versions[i], names[i])
    r.expect_end()
    return DlibResnet(
        input=input_layer,
        layers=tuple(layers),
        margin=margin,
        dist_thresh=dist_thresh,
        source_sha256=hashlib.sha256(data).hexdigest(),
    )


# --- ONNX -----------------------------------------------------------------------------------


def _fold(
    conv: ConvLayer, affine: AffineLayer | None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Conv weights and bias with a following per-channel affine folded in."""
    w = conv.filters.astype(np.float64)
    b = (
        conv.bias.astype(np.float64)
        if conv.bias is not None
        else np.zeros(w.shape[0], dtype=np.float64)
    )
    if affine is not None:
        gamma = affine.gamma.astype(np.float64)
        w = w * gamma[:, None, None, None]
        b = b * gamma + affine.beta.astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


class _Graph:
    """Collects nodes and initialisers; tracks each tensor's (C, H, W)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _pairs(layers: Sequence[DlibLayer]) -> Iterator[tuple[DlibLayer, AffineLayer | None]]:
    """Walk the layers, pairing each conv with the affine right after it (to fold)."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, ConvLayer) and not layer.fused_relu and isinstance(nxt, AffineLayer):
            yield layer, nxt
            i += 2
        else:
            yield layer, None
            i += 1


def _pad_to(g: _Graph, x: str, target: tuple[int, int, int]) -> str:
    c, h, w = g.shapes[x]
    if (c, h, w) == target:
        return x
    pads = g.const("pads", [0, 0, 0, 0, 0, target[0] - c, target[1] - h, target[2] - w], np.int64)
    out = g.op("Pad", [x, pads], "pad", mode="constant")
    g.shapes[out] = target
    return out


def _emit(g: _Graph, net: DlibResnet, x: str, shape: tuple[int, int, int]) -> str:
    g.shapes[x] = shape
    tags: dict[int, str] = {}
    for layer, affine in _pairs(net.layers):
        c, h, w = g.shapes[x]
        if isinstance(layer, ConvLayer):
            weights, bias = _fold(layer, affine)
            o, i, kh, kw = weights.shape
            if i != c:
                raise ModelFormatError(f"a conv layer expects {i} input channels, but gets {c}")
            (sy, sx), (py, px) = layer.stride, layer.padding
            x = g.op(
                "Conv",
                [x, g.const("conv_w", weights), g.const("conv_b", bias)],
                "conv",
                kernel_shape=[kh, kw],
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            g.shapes[x] = (o, 1 + (h + 2 * py - kh) // sy, 1 + (w + 2 * px - kw) // sx)
            if layer.fused_relu:
                x2 = g.op("Relu", [x], "relu")
                g.shapes[x2] = g.shapes[x]
                x = x2
        elif isinstance(layer, AffineLayer):
            x2 = g.op(
                "Add",
                [
                    g.op("Mul", [x, g.const("gamma", layer.gamma.reshape(-1, 1, 1))], "scale"),
                    g.const("beta", layer.beta.reshape(-1, 1, 1)),
                ],
                "affine",
            )
            g.shapes[x2], x = g.shapes[x], x2
        elif isinstance(layer, ReluLayer):
            if not layer.disabled:
                x2 = g.op("Relu", [x], "relu")
                g.shapes[x2], x = g.shapes[x], x2
        elif isinstance(layer, PoolLayer):
            mode = "Max" if layer.mode == "max" else "Average"
            if layer.is_global:
                x2 = g.op(f"Global{mode}Pool", [x], f"{layer.mode}pool")
                g.shapes[x2] = (c, 1, 1)
            else:
                (ky, kx), (sy, sx), (py, px) = layer.window, layer.stride, layer.padding
                attrs: dict[str, Any] = {
                    "kernel_shape": [ky, kx],
                    "strides": [sy, sx],
                    "pads": [py, px, py, px],
                }
                if mode == "Average":
                    attrs["count_include_pad"] = 0  # dlib averages over real cells only
                x2 = g.op(f"{mode}Pool", [x], f"{layer.mode}pool", **attrs)
                g.shapes[x2] = (c, 1 + (h + 2 * py - ky) // sy, 1 + (w + 2 * px - kx) // sx)
            x = x2
        elif isinstance(layer, TagLayer):
            tags[layer.tag] = x
        elif isinstance(layer, SkipLayer):
            x = tags[layer.tag]
        elif isinstance(layer, AddPrevLayer):
            other = tags[layer.tag]
            # dlib's add makes the larger size and treats missing cells (channels, rows,
            # columns) of the smaller input as zeros aligned at the top-left.
            target = tuple(max(a, b) for a, b in zip(g.shapes[x], g.shapes[other], strict=True))
            t3 = (target[0], target[1], target[2])
            x2 = g.op("Add", [_pad_to(g, x, t3), _pad_to(g, other, t3)], "add")
            g.shapes[x2], x = t3, x2
        elif isinstance(layer, FcLayer):
            flat = g.op("Flatten", [x], "flatten", axis=1)
            inputs = [flat, g.const("fc_w", layer.weights)]
            if layer.bias is not None:
                inputs.append(g.const("fc_b", layer.bias))
            x = g.op("Gemm", inputs, "fc")
            g.shapes[x] = (layer.weights.shape[1], 1, 1)
    return x


def dlib_resnet_to_onnx(net: DlibResnet) -> onnx.ModelProto:
    """Build the ONNX model for a parsed network (see the module docstring for the contract).

    Each convolution is followed by an affine layer in this network; the affine's
    per-channel scale and shift are folded into the convolution's weights and bias.
    """
    g = _Graph()
    rows, cols = net.input.rows, net.input.cols
    x = g.op("Cast", [INPUT_NAME], "to_float", to=TensorProto.FLOAT)
    x = g.op("Sub", [x, g.const("rgb_means", net.input.means)], "sub_means")
    x = g.op("Mul", [x, g.const("inv_256", 1.0 / 256.0)], "scale")
    x = g.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    x = _emit(g, net, x, (3, rows, cols))
    # Rename the last tensor to the output name instead of adding an Identity node.
    last = g.nodes[-1]
    last.output[0] = OUTPUT_NAME
    last.name = "fc"
    dim = g.shapes[x][0]

    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", rows, cols, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", dim])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lfr_actors",
        doc_string=(
            f"Converted by lfr_actors from dlib's {DLIB_RESNET_FILENAME} "
            f"(sha256 {net.source_sha256}), the ResNet face descriptor of dlib's "
            "dnn_face_recognition_ex.cpp. Input 'chips': uint8 [N, "
            f"{rows}, {cols}, 3] RGB face chips aligned like dlib's get_face_chip "
            f"(size {rows}, padding 0.25). Output 'embeddings': float32 [N, {dim}], dlib's "
            "raw descriptor, not L2-normalised; compare by Euclidean distance "
            f"(dlib's threshold {net.dist_thresh:g})."
        ),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "source": DLIB_RESNET_FILENAME,
            "source_sha256": net.source_sha256,
            "dist_thresh": repr(net.dist_thresh),
            "margin": repr(net.margin),
            "input_means_rgb": ",".join(repr(m) for m in net.input.means),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_dlib_resnet(data: bytes) -> onnx.ModelProto:
    """Convert the bytes of ``dlib_face_recognition_resnet_model_v1.dat`` to ONNX.

    Input ``chips`` uint8 ``[N, 150, 150, 3]`` RGB; output ``embeddings`` float32
    ``[N, 128]``, dlib's raw (not L2-normalised) descriptor. Raises
    :class:`~lfr_actors.errors.ModelFormatError` if the file is not that network.
    """
    return dlib_resnet_to_onnx(parse_dlib_resnet(data))

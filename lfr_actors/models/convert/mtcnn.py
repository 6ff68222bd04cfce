"""Build ONNX graphs for MTCNN's three networks from their torch state dicts.

The state dicts are facenet-pytorch 2.6.0's ``pnet.pt``, ``rnet.pt`` and ``onet.pt``
(read with :func:`~lfr_actors.models.convert.torch_legacy.load_legacy_state_dict`); the
graphs reproduce its ``PNet``, ``RNet`` and ``ONet`` modules. Only
:class:`lfr_actors.models.detector.MtcnnDetector` consumes these graphs.

Conventions shared by the three graphs (opset 17):

* input ``"image"``: float32 ``[N, 3, H, W]``, **raw RGB pixel values in [0, 255]**, NCHW.
  The graph normalises them itself, ``(x - 127.5) * 0.0078125``. Raw zeros are what
  MTCNN pads crops with outside the image.
* ``pnet``: ``N``, ``H`` and ``W`` are dynamic (H, W >= 12). Outputs ``"prob"``
  ``[N, 2, h, w]`` (softmax over axis 1; channel 1 is the face probability) and ``"reg"``
  ``[N, 4, h, w]`` (box offsets dx1, dy1, dx2, dy2 as fractions of the window size), with
  ``h = ceil((H - 2) / 2) - 4`` and likewise ``w``: one cell per 12x12 window at stride 2.
* ``rnet``: input ``[N, 3, 24, 24]``; outputs ``"prob"`` ``[N, 2]``, ``"reg"`` ``[N, 4]``.
* ``onet``: input ``[N, 3, 48, 48]``; outputs ``"prob"`` ``[N, 2]``, ``"reg"`` ``[N, 4]``,
  ``"landmarks"`` ``[N, 10]``: five x then five y, as fractions of the box (image-left
  eye, image-right eye, nose, image-left mouth corner, image-right mouth corner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from lfr_actors.errors import ModelFormatError

__all__ = [
    "INPUT_NAME",
    "LANDMARKS_OUTPUT",
    "PROB_OUTPUT",
    "REG_OUTPUT",
    "convert_mtcnn",
]

INPUT_NAME = "image"
PROB_OUTPUT = "prob"
REG_OUTPUT = "reg"
LANDMARKS_OUTPUT = "landmarks"

_OPSET = 17
# IR 8 is the lowest that carries opset 17: older ONNX Runtime builds can still load it.
_IR_VERSION = 8
_PIXEL_MEAN = 127.5
_PIXEL_SCALE = 0.0078125

StateDict = Mapping[str, npt.NDArray[Any]]

# Expected state-dict shapes: (conv name, out, in, kernel) and (dense name, out, in).
_PNET_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (10, 3, 3, 3),
    "conv1.bias": (10,),
    "prelu1.weight": (10,),
    "conv2.weight": (16, 10, 3, 3),
    "conv2.bias": (16,),
    "prelu2.weight": (16,),
    "conv3.weight": (32, 16, 3, 3),
    "conv3.bias": (32,),
    "prelu3.weight": (32,),
    "conv4_1.weight": (2, 32, 1, 1),
    "conv4_1.bias": (2,),
    "conv4_2.weight": (4, 32, 1, 1),
    "conv4_2.bias": (4,),
}
_RNET_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (28, 3, 3, 3),
    "conv1.bias": (28,),
    "prelu1.weight": (28,),
    "conv2.weight": (48, 28, 3, 3),
    "conv2.bias": (48,),
    "prelu2.weight": (48,),
    "conv3.weight": (64, 48, 2, 2),
    "conv3.bias": (64,),
    "prelu3.weight": (64,),
    "dense4.weight": (128, 576),
    "dense4.bias": (128,),
    "prelu4.weight": (128,),
    "dense5_1.weight": (2, 128),
    "dense5_1.bias": (2,),
    "dense5_2.weight": (4, 128),
    "dense5_2.bias": (4,),
}
_ONET_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (32, 3, 3, 3),
    "conv1.bias": (32,),
    "prelu1.weight": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "prelu2.weight": (64,),
    "conv3.weight": (64, 64, 3, 3),
    "conv3.bias": (64,),
    "prelu3.weight": (64,),
    "conv4.weight": (128, 64, 2, 2),
    "conv4.bias": (128,),
    "prelu4.weight": (128,),
    "dense5.weight": (256, 1152),
    "dense5.bias": (256,),
    "prelu5.weight": (256,),
    "dense6_1.weight": (2, 256),
    "dense6_1.bias": (2,),
    "dense6_2.weight": (4, 256),
    "dense6_2.bias": (4,),
    "dense6_3.weight": (10, 256),
    "dense6_3.bias": (10,),
}


class _GraphBuilder:
    """Accumulates nodes and initialisers for one network."""

    def __init__(self, net: str, state: StateDict, shapes: Mapping[str, tuple[int, ...]]):
        _validate(net, state, shapes)
        self.net = net
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, key: str, shape: tuple[int, ...] | None = None) -> str:
        value = np.asarray(self.state[key], dtype=np.float32)
        if shape is not None:
            value = value.reshape(shape)
        return self.const(key, np.ascontiguousarray(value))

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def normalise(self, x: str) -> str:
        mean = self.const("pixel_mean", np.array(_PIXEL_MEAN, np.float32))
        scale = self.const("pixel_scale", np.array(_PIXEL_SCALE, np.float32))
        return self.node("Mul", [self.node("Sub", [x, mean], "centred"), scale], "normalised")

    def conv_prelu(self, x: str, conv: str, prelu: str) -> str:
        y = self.conv(x, conv)
        channels = self.state[f"{prelu}.weight"].shape[0]
        slope = self.weight(f"{prelu}.weight", (channels, 1, 1))
        return self.node("PRelu", [y, slope], prelu)

    def conv(self, x: str, conv: str) -> str:
        inputs = [x, self.weight(f"{conv}.weight"), self.weight(f"{conv}.bias")]
        return self.node("Conv", inputs, conv)

    def max_pool(self, x: str, name: str, kernel: int, stride: int) -> str:
        return self.node(
            "MaxPool",
            [x],
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            ceil_mode=1,
        )

    def flatten_like_torch(self, x: str) -> str:
        # facenet-pytorch permutes NCHW to NWHC before flattening (a Caffe port's legacy);
        # the dense weights expect that element order.
        permuted = self.node("Transpose", [x], "permuted", perm=[0, 3, 2, 1])
        return self.node("Flatten", [permuted], "flat", axis=1)

    def dense(self, x: str, name: str) -> str:
        inputs = [x, self.weight(f"{name}.weight"), self.weight(f"{name}.bias")]
        return self.node("Gemm", inputs, name, transB=1)

    def dense_prelu(self, x: str, dense: str, prelu: str) -> str:
        y = self.dense(x, dense)
        return self.node("PRelu", [y, self.weight(f"{prelu}.weight")], prelu)

    def softmax(self, x: str, output: str) -> str:
        return self.node("Softmax", [x], output, axis=1)

    def identity(self, x: str, output: str) -> str:
        return self.node("Identity", [x], output)

    def model(
        self,
        input_shape: list[int | str],
        outputs: list[tuple[str, list[int | str]]],
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            f"mtcnn_{self.net}",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            producer_name="lfr_actors",
            doc_string=(
                f"MTCNN {self.net} converted from facenet-pytorch weights. Input: raw RGB "
                "pixels in [0, 255], float32 NCHW; normalised in the graph."
            ),
            opset_imports=[helper.make_opsetid("", _OPSET)],
        )
        model.ir_version = _IR_VERSION
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ModelFormatError(
                f"MTCNN {self.net}: the built ONNX graph is invalid: {exc}"
            ) from exc
        return model


def _validate(net: str, state: StateDict, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise ModelFormatError listing every missing, misshapen or unexpected entry."""
    problems: list[str] = []
    missing = [k for k in shapes if k not in state]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    for key, shape in shapes.items():
        if key in state:
            value = np.asarray(state[key])
            if tuple(value.shape) != shape:
                problems.append(f"{key} has shape {tuple(value.shape)}, expected {shape}")
            elif not np.issubdtype(value.dtype, np.floating):
                problems.append(f"{key} has dtype {value.dtype}, expected floating point")
            elif not np.all(np.isfinite(value)):
                problems.append(f"{key} holds non-finite values")
    unexpected = [k for k in state if k not in shapes]
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    if problems:
        raise ModelFormatError(
            f"MTCNN {net} state dict does not match facenet-pytorch's {net.upper()}: "
            + "; ".join(problems)
        )


def _pnet(state: StateDict) -> onnx.ModelProto:
    b = _GraphBuilder("pnet", state, _PNET_SHAPES)
    x = b.conv_prelu(b.normalise(INPUT_NAME), "conv1", "prelu1")
    x = b.max_pool(x, "pool1", 2, 2)
    x = b.conv_prelu(x, "conv2", "prelu2")
    x = b.conv_prelu(x, "conv3", "prelu3")
    b.softmax(b.conv(x, "conv4_1"), PROB_OUTPUT)
    b.identity(b.conv(x, "conv4_2"), REG_OUTPUT)
    return b.model(
        ["N", 3, "H", "W"],
        [(PROB_OUTPUT, ["N", 2, "h", "w"]), (REG_OUTPUT, ["N", 4, "h", "w"])],
    )


def _rnet(state: StateDict) -> onnx.ModelProto:
    b = _GraphBuilder("rnet", state, _RNET_SHAPES)
    x = b.conv_prelu(b.normalise(INPUT_NAME), "conv1", "prelu1")
    x = b.max_pool(x, "pool1", 3, 2)
    x = b.conv_prelu(x, "conv2", "prelu2")
    x = b.max_pool(x, "pool2", 3, 2)
    x = b.conv_prelu(x, "conv3", "prelu3")
    x = b.dense_prelu(b.flatten_like_torch(x), "dense4", "prelu4")
    b.softmax(b.dense(x, "dense5_1"), PROB_OUTPUT)
    b.identity(b.dense(x, "dense5_2"), REG_OUTPUT)
    return b.model(["N", 3, 24, 24], [(PROB_OUTPUT, ["N", 2]), (REG_OUTPUT, ["N", 4])])


def _onet(state: StateDict) -> onnx.ModelProto:
    b = _GraphBuilder("onet", state, _ONET_SHAPES)
    x = b.conv_prelu(b.normalise(INPUT_NAME), "conv1", "prelu1")
    x = b.max_pool(x, "pool1", 3, 2)
    x = b.conv_prelu(x, "conv2", "prelu2")
    x = b.max_pool(x, "pool2", 3, 2)
    x = b.conv_prelu(x, "conv3", "prelu3")
    x = b.max_pool(x, "pool3", 2, 2)
    x = b.conv_prelu(x, "conv4", "prelu4")
    x = b.dense_prelu(b.flatten_like_torch(x), "dense5", "prelu5")
    b.softmax(b.dense(x, "dense6_1"), PROB_OUTPUT)
    b.identity(b.dense(x, "dense6_2"), REG_OUTPUT)
    b.identity(b.dense(x, "dense6_3"), LANDMARKS_OUTPUT)
    return b.model(
        ["N", 3, 48, 48],
        [
            (PROB_OUTPUT, ["N", 2]),
            (REG_OUTPUT, ["N", 4]),
            (LANDMARKS_OUTPUT, ["N", 10]),
        ],
    )


def convert_mtcnn(pnet: StateDict, rnet: StateDict, onet: StateDict) -> dict[str, onnx.ModelProto]:
    """Build the three MTCNN ONNX models from facenet-pytorch state dicts.

    Returns ``{"pnet": ..., "rnet": ..., "onet": ...}``, each checked by
    ``onnx.checker``; tensor names and conventions are in this module's docstring.
    Raises :class:`ModelFormatError` when a state dict lacks an entry, has one of the
    wrong shape or dtype, or has entries the network does not use.
    """
    return {"pnet": _pnet(pnet), "rnet": _rnet(rnet), "onet": _onet(onet)}

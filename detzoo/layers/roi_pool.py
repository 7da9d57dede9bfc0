"""RoIAlign over one feature map or a pyramid, with each box pooled from one level.

``roi_align`` is torchvision's RoIAlign (the same samples, clamping and zeros outside the
map, ``aligned`` and adaptive ``sampling_ratio=0`` included) built from torch ops, vectorised
over all RoIs of all levels in one pass, with a multithreaded backward:

- the maps become one table with a row of C values per pixel (images, then levels, then
  pixels in raster order): a view of a single channels-last map, one copy otherwise;
- every output bin is a weighted sum of table rows. Bilinear sampling is separable, so along
  each axis a bin's samples (their two neighbouring pixels each) merge into weights on the
  pixels they touch (``_axis_weights``), and the bin's entries are the outer product of its y
  and x pixels: each pixel enters a bin once, with the bin's total weight (9 entries for a
  bin of 2 x 2 samples that lie within one pixel of each other, not 16). The number of
  entries varies by RoI (adaptive sampling, box sizes): they are ragged, not padded;
- forward: ``F.embedding_bag`` sums each bin's weighted rows (multithreaded); backward: the
  same sum on the transposed entries, each table row summing the weighted output gradients
  of the bins that read it (entries stably sorted by row). torchvision's CPU backward is a
  single-threaded scatter that recomputes the sampling per channel. Bit for bit
  deterministic on the CPU; on CUDA the weights' ``index_add_`` uses atomics (as
  torchvision's CUDA backward does).

``detzoo.layers.mask_ops.mask_targets`` keeps torchvision's ``roi_align`` (one channel: see
there).

Two cases run torchvision's ``roi_align`` per level instead (``kernel="torchvision"``, what
``kernel="auto"`` picks for them): a traced model (ONNX export), which the exporter writes as
ONNX's ``RoiAlign`` (the entries' number depends on the boxes, which a trace cannot follow),
and maps on a GPU, where torchvision's CUDA kernels are faster than this gather, which is a
CPU optimisation. Selecting a level's boxes there reads their count back to the host (one
synchronisation per level, as torchvision's ``MultiScaleRoIAlign``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_area
from torchvision.ops import roi_align as tv_roi_align

KERNELS = ("auto", "detzoo", "torchvision")


def _starts(counts: Tensor) -> Tensor:
    """First element of each of the consecutive groups of ``counts[i]`` elements."""
    return counts.cumsum(0) - counts


def _group_of(counts: Tensor) -> Tensor:
    """Each element's group, for consecutive groups of ``counts[i]`` elements."""
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)


def _axis_weights(start: Tensor, bin_size: Tensor, grid: Tensor, size: Tensor, bins: int) -> tuple[Tensor, ...]:
    """One axis of RoIAlign for (K,) RoIs of ``bins`` bins from ``start`` (map pixels):
    bin p samples ``grid`` positions start + p * bin_size + (i + 0.5) * bin_size / grid
    (torchvision's arithmetic); one outside [-1, size] weighs 0, the others are clamped into
    [0, size - 1] and split between their two neighbouring pixels. Merged per bin into weights
    (the bin's mean over its samples) on slots for the pixels its samples touch, in order
    (consecutive samples share the pixels they both touch; none between samples more than a
    pixel apart); ``slots[k]`` is the most any bin of RoI k needs, the others' extra slots
    weigh 0.

    Returns ``slots`` (K,) and, per (RoI, bin, slot) in that order, the pixel and its weight."""
    k = _group_of(grid * bins)
    g = grid[k]
    n = torch.arange(k.shape[0], device=k.device)
    place = n - _starts(grid * bins)[k]
    p = torch.div(place, g, rounding_mode="floor")
    j = place - p * g  # the sample's place in its bin
    b = bin_size[k]
    i = torch.where(b < 0, g - 1 - j, j)  # its index: positions increase with j in every bin
    pos = start[k] + p * b + (i + 0.5) * b / g
    limit = size[k]
    weight = ((pos >= -1) & (pos <= limit)).to(pos.dtype) / g
    pos = torch.minimum(pos.clamp(min=0), (limit - 1).to(pos.dtype))
    low = pos.floor()
    frac = pos - low
    low = low.to(torch.int64)
    # the lower pixel's slot: its offset from the bin's first, less the gaps between samples
    gap = torch.zeros_like(low)
    gap[1:] = (low[1:] - low[:-1] - 2).clamp(min=0)
    gap[j == 0] = 0
    gaps = gap.cumsum(0)
    first = n - j
    slot = low - low[first] - (gaps - gaps[first])
    slots = torch.zeros_like(grid).scatter_reduce_(0, k, slot + 2, "amax")
    per_bin = slots.repeat_interleave(bins)
    index = _starts(per_bin)[k * bins + p] + slot
    weights = pos.new_zeros(int(per_bin.sum()))
    weights.index_add_(0, index, (1 - frac) * weight).index_add_(0, index + 1, frac * weight)
    pixel = torch.zeros_like(weights, dtype=torch.int64)  # unused slots: pixel 0, weight 0
    pixel.scatter_(0, index, low).scatter_(0, index + 1, torch.minimum(low + 1, limit - 1))
    return slots, pixel, weights


def _sampling_entries(
    sizes: Tensor, rois: Tensor, levels: Tensor, scales: Tensor, output_size: int, sampling_ratio: int, aligned: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """RoIAlign as a sparse (K * S * S bins) x (table rows) matrix: each entry's table row
    and weight, in bin order, and each bin's number of entries. ``sizes``: (L, 2) map
    heights and widths; ``levels``: (K,) each RoI's level."""
    s, device = output_size, rois.device
    pixels = sizes.prod(1)
    h, w = sizes[levels].unbind(1)
    box = rois[:, 1:] * scales[levels, None] - (0.5 if aligned else 0.0)
    extent = box[:, 2:] - box[:, :2]
    if not aligned:
        extent = extent.clamp(min=1)
    bin_size = extent / s
    if sampling_ratio > 0:
        grid = torch.full_like(bin_size, sampling_ratio, dtype=torch.int64)
    else:
        grid = bin_size.ceil().to(torch.int64).clamp(min=0)
    slots_x, pixel_x, weight_x = _axis_weights(box[:, 0], bin_size[:, 0], grid[:, 0], w, s)
    slots_y, pixel_y, weight_y = _axis_weights(box[:, 1], bin_size[:, 1], grid[:, 1], h, s)
    # the table row of each y slot's pixel in column 0: image, level, row
    k = _group_of(slots_y * s)
    row_y = (rois[:, 0].to(torch.int64) * pixels.sum() + _starts(pixels)[levels])[k] + pixel_y * w[k]
    # bin (k, ph, pw) -> its y slots ("lines", from the first of bin row ph) -> each line's x
    # slots (from the first of bin column pw): the entries
    p = torch.arange(s, device=device)
    first_y = ((_starts(slots_y) * s)[:, None] + p * slots_y[:, None])[:, :, None].expand(-1, s, s).reshape(-1)
    first_x = ((_starts(slots_x) * s)[:, None] + p * slots_x[:, None])[:, None, :].expand(-1, s, s).reshape(-1)
    lines, per_line = slots_y.repeat_interleave(s * s), slots_x.repeat_interleave(s * s)
    line_bin = _group_of(lines)
    y = torch.arange(line_bin.shape[0], device=device) + (first_y - _starts(lines)).index_select(0, line_bin)
    per_line = per_line.index_select(0, line_bin)
    line = _group_of(per_line)
    x = torch.arange(line.shape[0], device=device) + (
        first_x.index_select(0, line_bin) - _starts(per_line)).index_select(0, line)
    row = row_y.index_select(0, y).index_select(0, line) + pixel_x.index_select(0, x)
    weight = weight_y.index_select(0, y).index_select(0, line) * weight_x.index_select(0, x)
    return row, weight, (slots_y * slots_x).repeat_interleave(s * s)


class _WeightedRowSum(torch.autograd.Function):
    """``out[i] = sum of weight[j] * table[row[j]]`` over the ``counts[i]`` entries j of bag
    i (consecutive); the gradient w.r.t. ``table`` is the same sum on the transposed entries
    (a bag per table row, entries stably sorted by row: deterministic)."""

    @staticmethod
    def forward(ctx, table: Tensor, row: Tensor, weight: Tensor, counts: Tensor) -> Tensor:
        ctx.save_for_backward(row, weight, counts)
        ctx.rows = table.shape[0]
        return F.embedding_bag(row, table, _starts(counts), mode="sum", per_sample_weights=weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        row, weight, counts = ctx.saved_tensors
        # int32 keys (when the rows fit): torch sorts them about twice as fast as int64
        order = torch.argsort(row.to(torch.int32) if ctx.rows < 2**31 else row, stable=True)
        bag = _group_of(counts).index_select(0, order)
        per_row = torch.bincount(row, minlength=ctx.rows)
        grad_table = F.embedding_bag(
            bag, grad.contiguous(), _starts(per_row), mode="sum", per_sample_weights=weight.index_select(0, order)
        )
        return grad_table, None, None, None


def roi_align(
    features: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor | None = None,
    *,
    scales: Sequence[float],
    output_size: int,
    sampling_ratio: int = 0,
    aligned: bool = True,
    kernel: str = "auto",
) -> Tensor:
    """torchvision's ``roi_align`` of (K, 5) ``rois`` (image index, x1, y1, x2, y2 in image
    pixels), RoI k on ``features[levels[k]]`` (N, C, H, W) at ``scales[levels[k]]`` (all on
    the first map when ``levels`` is None). Returns (K, C, S, S) in the maps' dtype, computed
    in at least fp32 (as torchvision under autocast), channels-last in memory for
    ``kernel="detzoo"``. ``kernel``: "detzoo" (all levels in one gather), "torchvision"
    (its kernel per level) or "auto" (``roi_align_kernel``)."""
    if len(features) != len(scales):
        raise ValueError(f"roi_align: {len(features)} feature maps but {len(scales)} scales")
    if levels is None:
        levels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
    if kernel == "auto":
        kernel = roi_align_kernel(features[0].device, tracing=torch.jit.is_tracing())
    if kernel == "torchvision":
        return _per_level_roi_align(features, rois, levels, scales, output_size, sampling_ratio, aligned)
    if kernel != "detzoo":
        raise ValueError(f"roi_align: kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    c = features[0].shape[1]
    dtype = torch.promote_types(features[0].dtype, torch.float32)
    rows = [f.flatten(2).transpose(1, 2) for f in features]  # (N, H * W, C): views
    table = (torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]).reshape(-1, c).to(dtype)
    row, weight, counts = _sampling_entries(
        torch.tensor([f.shape[-2:] for f in features], device=rois.device), rois.to(dtype), levels,
        torch.tensor(scales, dtype=dtype, device=rois.device), output_size, sampling_ratio, aligned,
    )
    out = _WeightedRowSum.apply(table, row, weight, counts)
    return out.view(rois.shape[0], output_size, output_size, c).permute(0, 3, 1, 2).to(features[0].dtype)


def roi_align_kernel(device: torch.device, *, tracing: bool) -> str:
    """The kernel ``kernel="auto"`` runs: torchvision's in a traced model and on CUDA,
    detzoo's gather otherwise (the CPU)."""
    return "torchvision" if tracing or device.type == "cuda" else "detzoo"


def _per_level_roi_align(
    features: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor,
    scales: Sequence[float],
    output_size: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """``roi_align`` by torchvision's kernel, one level at a time (the ONNX exporter writes
    it as ``RoiAlign``)."""
    out = rois.new_zeros((rois.shape[0], features[0].shape[1], output_size, output_size)).to(features[0].dtype)
    for level, (feature, scale) in enumerate(zip(features, scales)):
        idx = torch.nonzero(levels == level).flatten()
        out[idx] = tv_roi_align(
            feature, rois[idx], output_size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned
        ).to(out.dtype)
    return out


class MultiLevelRoIAlign(nn.Module):
    """Pools ``output_size`` x ``output_size`` features for boxes from the level
    ``floor(canonical_level + log2(sqrt(area) / canonical_size))`` clamped to the levels
    given (FPN paper, eq. 1), all levels in one ``roi_align``. With one level it is plain
    RoIAlign.

    ``aligned`` / ``sampling_ratio``: detectron2 and mmdetection use True / 0,
    torchvision False / 2. ``kernel``: ``roi_align``'s ("auto": torchvision's per level on a
    GPU and in a traced model, detzoo's gather on the CPU).
    """

    def __init__(
        self,
        *,
        strides: Sequence[int],
        output_size: int,
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_level: int = 4,
        canonical_size: int = 224,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
        self.kernel = kernel
        self.scales = [1.0 / s for s in strides]
        levels = [int(round(math.log2(s))) for s in strides]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"MultiLevelRoIAlign: strides {list(strides)} are not consecutive powers of 2")
        self.min_level, self.max_level = levels[0], levels[-1]
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_level = canonical_level
        self.canonical_size = canonical_size

    def assign_levels(self, boxes: Tensor) -> Tensor:
        """Index (0-based into the given levels) of the level each box is pooled from; an
        inverted box (x2 < x1 or y2 < y1) has no area: the lowest level."""
        size = torch.sqrt(box_area(boxes).clamp(min=0))
        level = torch.floor(
            self.canonical_level + torch.log2(size / self.canonical_size) + torch.tensor(1e-6, dtype=size.dtype)
        )
        return level.clamp(min=self.min_level, max=self.max_level).to(torch.int64) - self.min_level

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """``features``: one (N, C, H, W) map per level; ``boxes``: per image (M_i, 4) in
        image pixels. Returns (sum M_i, C, S, S) in the order of the concatenated boxes."""
        rois = torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )
        levels = self.assign_levels(rois[:, 1:]) if len(features) > 1 else None
        return roi_align(
            features, rois, levels, scales=self.scales, output_size=self.output_size,
            sampling_ratio=self.sampling_ratio, aligned=self.aligned, kernel=self.kernel,
        )

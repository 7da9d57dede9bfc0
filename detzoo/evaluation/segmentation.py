"""COCO segmentations (polygons and run-length encodings): checks before pycocotools' C
code reads them, and the conversions between them and binary masks (``to_rle``,
``rles_to_masks``, ``masks_to_rles``).

pycocotools trusts an RLE: counts that do not add up to ``height * width`` make its mask
IoU loop forever (Ctrl-C cannot stop it) and its decoder write past the mask. So every RLE
that detzoo takes from a file, in an annotation file or a results file, goes through
``segmentation_problem`` first. An RLE is ``{"size": [height, width], "counts": ...}`` with counts
either a list of run lengths (uncompressed) or pycocotools' compressed string: each run
length, from the fourth on, as the difference to the one two before it, in groups of
5-bit digits offset by 48 ('0'), least significant first, 0x20 marking that more follow
and 0x10 in the last one the sign (``rleFrString`` in pycocotools' maskApi.c).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

_DIGITS = 6  # a run length in at most 6 characters (30 bits): more overflow maskApi.c's int shifts


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_numbers(values: Any) -> bool:
    """A list or tuple of finite numbers (ints or floats; not bools, strings or NaN)."""
    if not isinstance(values, (list, tuple)):
        return False
    if set(map(type, values)) <= {int, float}:  # the usual case, checked at C speed
        return all(map(math.isfinite, values))
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def segmentation_problem(segm: Any, size: Sequence[int] | None = None) -> str | None:
    """What makes a COCO segmentation unusable, or None for polygons (lists of finite
    numbers) and for an RLE that ``rle_problem`` accepts (``size``: the image's (h, w))."""
    if isinstance(segm, dict):
        return rle_problem(segm, size)
    if isinstance(segm, list) and all(finite_numbers(p) for p in segm):
        return None
    return f"segmentation {str(segm)[:60]!r}, expected polygons (lists of finite numbers) or an RLE"


def decode_counts(counts: str | bytes) -> list[int] | str:
    """The run lengths of a compressed RLE string, read as rleFrString reads them, or what
    makes it unreadable."""
    runs: list[int] = []
    value = digit = 0
    for position, byte in enumerate(counts.encode() if isinstance(counts, str) else counts):
        c = byte - 48
        if not 0 <= c <= 63:
            return f"character {chr(byte)!r} at {position} is not one of pycocotools' ('0' to 'o')"
        value |= (c & 0x1F) << (5 * digit)
        digit += 1
        if c & 0x20:  # more digits follow
            if digit == _DIGITS:
                return f"a run length of more than {_DIGITS} characters at {position + 1 - digit}"
            continue
        if c & 0x10:  # negative
            value -= 1 << (5 * digit)
        if len(runs) > 2:  # from the fourth on: the difference to the one two before
            value += runs[-2]
        runs.append(value)
        value = digit = 0
    return "the string ends in the middle of a run length" if digit else runs


def rle_problem(rle: dict, size: Sequence[int] | None = None) -> str | None:
    """What makes ``rle`` unusable, or None: ``size`` not two positive integers (or not
    ``size``, the image's (h, w), when given), counts not a list of non-negative integers
    or a readable compressed string, or run lengths that do not add up to h x w."""
    height_width = rle.get("size")
    if not (isinstance(height_width, (list, tuple)) and len(height_width) == 2
            and all(_is_int(v) and v > 0 for v in height_width)):
        return f"an RLE whose size {height_width!r} is not [height, width], two positive integers"
    if size is not None and list(height_width) != list(size):
        return f"an RLE of size {list(height_width)}, but the image is (h, w) {list(size)}"
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        runs = decode_counts(counts)
        if isinstance(runs, str):
            return f"an RLE whose compressed counts cannot be read: {runs}"
        if min(runs, default=0) < 0:
            return "an RLE whose compressed counts hold a negative run length"
        total = sum(runs)
    elif isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts):
        total = sum(counts)
    else:
        return f"an RLE whose counts {str(counts)[:60]!r} are neither run lengths (non-negative integers) nor a string"
    expected = height_width[0] * height_width[1]
    if total != expected:
        return f"an RLE whose run lengths add up to {total}, not {expected} (its size {list(height_width)})"
    return None


def to_rle(segm: list | dict, height: int, width: int) -> dict:
    """The compressed RLE of a segmentation in an image of (``height``, ``width``), as
    COCO.annToRLE makes it: polygons merged into one, an uncompressed RLE compressed, a
    compressed RLE as it is."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def rles_to_masks(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 binary masks of N compressed RLEs of an image of (``height``, ``width``)."""
    if not rles:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(list(rles)).transpose(2, 0, 1))


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """(N, H, W) binary masks -> compressed RLEs with str counts (JSON-serialisable)."""
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles

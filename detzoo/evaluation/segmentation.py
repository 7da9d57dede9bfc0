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
_CHUNK = 1 << 20  # characters read together: numpy's temporaries stay small enough for malloc to reuse


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
    return segmentation_problems([segm], [size])[0]


def segmentation_problems(segms: Sequence[Any], sizes: Sequence[Sequence[int] | None]) -> list[str | None]:
    """``segmentation_problem`` of each segmentation in its image's ``sizes`` (or None), the
    RLEs checked together (``rle_problems``)."""
    rles = [i for i, segm in enumerate(segms) if isinstance(segm, dict)]
    read = dict(zip(rles, rle_problems([segms[i] for i in rles], [sizes[i] for i in rles])))
    return [read[i] if i in read else None if isinstance(segm, list) and all(finite_numbers(p) for p in segm)
            else f"segmentation {str(segm)[:60]!r}, expected polygons (lists of finite numbers) or an RLE"
            for i, segm in enumerate(segms)]


def read_counts(strings: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """The run lengths of compressed RLE strings, read by numpy as rleFrString reads each,
    about ``_CHUNK`` characters at a time: ``(runs, bounds, problems)``, string i's run lengths
    ``runs[bounds[i]:bounds[i + 1]]`` (int64) and ``problems[i]`` what makes it unreadable, or
    None (its runs then mean nothing)."""
    encoded = [s.encode() if isinstance(s, str) else s for s in strings]
    stop = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))
    edges = np.unique([0, *np.searchsorted(stop, np.arange(_CHUNK, stop[-1] if len(stop) else 0, _CHUNK)), len(stop)])
    parts = [_read_chunk(encoded[a:b]) for a, b in zip(edges[:-1].tolist(), edges[1:].tolist())]
    runs = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    counts = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    return runs, np.concatenate(([0], np.cumsum(counts))), [problem for p in parts for problem in p[2]]


def _read_chunk(encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """``read_counts`` of a few strings: (their run lengths, how many each, problems)."""
    stop = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))  # one past each string's end
    c = np.frombuffer(b"".join(encoded), np.uint8) - np.uint8(48)  # below '0' wraps to above 63
    if not len(c):
        return np.zeros(0, dtype=np.int64), np.zeros(len(encoded), dtype=np.int64), [None] * len(encoded)
    more = (c & 0x20).astype(bool)  # more digits follow
    end = ~more
    end[stop[stop > 0] - 1] = True  # a string ends its last run length
    ends = np.flatnonzero(end)
    digits = np.diff(ends, prepend=-1)  # each run length's characters
    starts = ends - digits + 1
    value = (c[starts] & 0x1F).astype(np.int64)
    for k in range(1, min(_DIGITS, int(digits.max()))):  # 5-bit digits, least significant first
        longer = np.flatnonzero(digits > k)
        value[longer] += (c[starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = np.flatnonzero(c[ends] & 0x10)
    value[negative] -= np.int64(1) << (5 * np.minimum(digits[negative], _DIGITS))
    first = np.searchsorted(ends, np.concatenate(([0], stop)))  # each string's first run length
    count = np.diff(first)
    first = first[:-1]
    # from the fourth on, the difference to the one two before: sums along each parity, from
    # the second and the third run length of each string on
    head = first[count > 0]
    leading = value[head]
    value[head] = 0
    for parity in (0, 1):
        chain = value[parity::2]  # a view: written through
        before = (first + 1 - parity) // 2  # the chain's elements before each string
        total = np.cumsum(chain)
        chain[:] = total - np.repeat(np.concatenate(([0], total))[before], (first + count + 1 - parity) // 2 - before)
    value[head] = leading
    return value, count, _problems(encoded, stop, c, starts[(digits > _DIGITS) | ((digits == _DIGITS) & more[ends])],
                                   more)  # fmt: skip


def _problems(encoded: list[bytes], stop: np.ndarray, c: np.ndarray, too_long: np.ndarray,
              more: np.ndarray) -> list[str | None]:  # fmt: skip
    """What stops rleFrString in each string of ``_read_chunk`` (``c``: its characters - 48,
    ``too_long``: where its run lengths of more than ``_DIGITS`` characters start): the first
    character out of range or the ``_DIGITS``-th of a run length that goes on, else an end in
    the middle of a run length; None for a readable string."""
    at = np.sort(np.concatenate((np.flatnonzero(c > 63), too_long + _DIGITS - 1)))
    strings, first = np.unique(np.searchsorted(stop, at, side="right"), return_index=True)
    problems: list[str | None] = [None] * len(encoded)
    for i, position in zip(strings.tolist(), at[first].tolist()):
        where = position - (int(stop[i]) - len(encoded[i]))  # in its string
        problems[i] = (f"character {chr((int(c[position]) + 48) % 256)!r} at {where} is not one of pycocotools' "
                       "('0' to 'o')" if c[position] > 63 else
                       f"a run length of more than {_DIGITS} characters at {where + 1 - _DIGITS}")  # fmt: skip
    length = np.diff(stop, prepend=0)
    for i in np.flatnonzero((length > 0) & more[stop - 1]).tolist():
        problems[i] = problems[i] or "the string ends in the middle of a run length"
    return problems


def rle_problem(rle: dict, size: Sequence[int] | None = None) -> str | None:
    """What makes ``rle`` unusable, or None: ``size`` not two positive integers (or not
    ``size``, the image's (h, w), when given), counts not a list of non-negative integers
    or a readable compressed string, or run lengths that do not add up to h x w."""
    return rle_problems([rle], [size])[0]


def rle_problems(rles: Sequence[dict], sizes: Sequence[Sequence[int] | None]) -> list[str | None]:
    """``rle_problem`` of each RLE in its image's ``sizes`` (or None), their compressed
    strings read together (``read_counts``)."""
    problems: list[str | None] = []
    strings: dict[int, str | bytes] = {}  # by position in rles
    for rle, size in zip(rles, sizes):
        height_width = rle.get("size")
        counts = rle.get("counts")
        if not (isinstance(height_width, (list, tuple)) and len(height_width) == 2
                and all(_is_int(v) and v > 0 for v in height_width)):
            problems.append(f"an RLE whose size {height_width!r} is not [height, width], two positive integers")
        elif size is not None and list(height_width) != list(size):
            problems.append(f"an RLE of size {list(height_width)}, but the image is (h, w) {list(size)}")
        elif isinstance(counts, (str, bytes)):
            strings[len(problems)] = counts
            problems.append(None)  # read below
        elif isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts):
            problems.append(_total_problem(sum(counts), height_width))
        else:
            problems.append(f"an RLE whose counts {str(counts)[:60]!r} are neither run lengths (non-negative "
                            "integers) nor a string")
    runs, bounds, unreadable = read_counts(list(strings.values()))
    totals = np.diff(np.concatenate(([0], np.cumsum(runs)))[bounds]).tolist()
    negative = np.diff(np.concatenate(([0], np.cumsum(runs < 0)))[bounds]).astype(bool).tolist()
    for i, problem, total, negative_run in zip(strings, unreadable, totals, negative):
        if problem:
            problems[i] = f"an RLE whose compressed counts cannot be read: {problem}"
        elif negative_run:
            problems[i] = "an RLE whose compressed counts hold a negative run length"
        else:
            problems[i] = _total_problem(total, rles[i]["size"])
    return problems


def _total_problem(total: int, height_width: Sequence[int]) -> str | None:
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

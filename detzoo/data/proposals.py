"""The proposals file that ``detzoo test`` writes for an RPN and Fast R-CNN reads.

Proposals map a dataset image id to ``(boxes, scores)``: (N, 4) xyxy boxes in original image
pixels and their (N,) objectness scores. The file is a compressed .npz of numeric arrays
only (``save_proposals``), read without unpickling (``load_proposals``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from detzoo.errors import DataError, MissingFileError
from detzoo.files import atomic_write

Proposals = Mapping[int, tuple[np.ndarray, np.ndarray]]
_FILE_ARRAYS = ("image_ids", "counts", "boxes", "scores")


def checked_proposals(image_id: int, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, scores)`` as arrays after checking id and shapes; errors name the image id."""
    if not isinstance(image_id, (int, np.integer)):
        raise TypeError(f"proposals are keyed by integer image ids, got {image_id!r}")
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"proposals of image {image_id}: boxes must be (N, 4), got {boxes.shape}")
    if scores.shape != (len(boxes),):
        raise ValueError(
            f"proposals of image {image_id}: {len(boxes)} boxes but scores of shape {scores.shape}"
        )
    return boxes, scores


def save_proposals(path: str | Path, proposals: Proposals) -> None:
    """Write proposals atomically to a compressed .npz: ``image_ids`` and ``counts`` (M,) int64,
    then all images' ``boxes`` (sum, 4) and ``scores`` (sum,) as float32, in that order."""
    image_ids = list(proposals)
    checked = [checked_proposals(i, *proposals[i]) for i in image_ids]
    with atomic_write(path) as f:
        np.savez_compressed(
            f,
            image_ids=np.array(image_ids, dtype=np.int64),
            counts=np.array([len(boxes) for boxes, _ in checked], dtype=np.int64),
            boxes=np.concatenate([np.zeros((0, 4)), *(boxes for boxes, _ in checked)]).astype(np.float32),
            scores=np.concatenate([np.zeros(0), *(scores for _, scores in checked)]).astype(np.float32),
        )


def _layout_problem(
    image_ids: np.ndarray, counts: np.ndarray, boxes: np.ndarray, scores: np.ndarray
) -> str | None:
    """What is wrong with a proposals file's arrays, or None."""
    for name, array in (("image_ids", image_ids), ("counts", counts)):
        if array.ndim != 1 or array.dtype.kind not in "iu":
            return f"{name} must be a 1-D integer array, got shape {array.shape} of {array.dtype}"
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind != "f":
        return f"boxes must be (N, 4) floats, got shape {boxes.shape} of {boxes.dtype}"
    if scores.ndim != 1 or scores.dtype.kind != "f":
        return f"scores must be (N,) floats, got shape {scores.shape} of {scores.dtype}"
    if len(counts) != len(image_ids) or (counts < 0).any() or not counts.sum() == len(boxes) == len(scores):
        return (
            f"inconsistent lengths: {len(image_ids)} image_ids, {len(counts)} counts summing to "
            f"{counts.sum()}, {len(boxes)} boxes, {len(scores)} scores"
        )
    ids, occurrences = np.unique(image_ids, return_counts=True)
    if (occurrences > 1).any():
        return f"image ids {ids[occurrences > 1][:10].tolist()} appear more than once"
    return None


def load_proposals(path: str | Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Read a file written by ``save_proposals`` (never unpickles); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"proposals file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"proposals file {path} is not an .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _FILE_ARRAYS if key in npz.files}
            not_arrays = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    except Exception as e:  # numpy/zipfile raise many types for a bad file; all mean the same here
        if "allow_pickle" in str(e):  # numpy's refusal of an object array, which unpickling would build
            raise DataError(
                f"proposals file {path} was refused: it holds pickled Python objects, which loading would run "
                "(a malicious file?); detzoo reads only numeric arrays from it"
            ) from e
        raise DataError(f"proposals file {path} could not be read (corrupt?): {type(e).__name__}: {e}") from e
    if not_arrays:  # an archive member without the .npy format: numpy hands back its bytes
        raise DataError(f"proposals file {path}: member(s) {not_arrays} are not numpy arrays (.npy)")
    missing = [key for key in _FILE_ARRAYS if key not in arrays]
    if missing:
        raise DataError(f"proposals file {path} lacks arrays {missing}; it needs {list(_FILE_ARRAYS)}")
    image_ids, counts, boxes, scores = (arrays[key] for key in _FILE_ARRAYS)
    problem = _layout_problem(image_ids, counts, boxes, scores)
    if problem:
        raise DataError(f"proposals file {path}: {problem}")
    ends = np.cumsum(counts)
    return {
        image_id: (boxes[end - count : end], scores[end - count : end])
        for image_id, count, end in zip(image_ids.tolist(), counts.tolist(), ends.tolist())
    }


def proposals_for(proposals: Proposals, image_id: int, *, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``(boxes, scores)`` of one image; ``path`` is the proposals file, named in the error
    raised when the image has no entry."""
    if image_id not in proposals:
        raise LookupError(
            f"proposals file {path} has no entry for image id {image_id} ({len(proposals)} images "
            "there); write it with `detzoo test` of an RPN on this same dataset"
        )
    return proposals[image_id]

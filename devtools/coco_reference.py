"""pycocotools, the reference of ``detzoo.evaluation.fast_coco`` (tests/test_fast_coco.py,
benchmarks/coco_eval_speed.py)."""

from __future__ import annotations

import contextlib
import copy
import io

from pycocotools.coco import COCO


def make_coco(dataset: dict) -> COCO:
    """A COCO of its own copy of ``dataset`` (COCOeval's segm evaluation rewrites the ground truth)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco

import os
from pathlib import Path

import pytest
import torch

from detzoo.config import apply_overrides, load_config
from detzoo.data.synthetic import data_overrides, make_synthetic_coco

TESTS = Path(__file__).parent
# test tiers: `make test` runs every test; `make test-quick` leaves these marks out
TIERS = {
    "parity": ("test_parity_torchvision.py", "test_parity_mmdet.py", "test_fpg.py", "test_nas_fpn.py"),
    "distributed": ("test_distributed.py",),
    "slow": ("test_speed_paths.py", "test_export_onnx.py", "test_convert_detectron.py", "test_training.py",
             "test_pretrained.py", "test_configs.py"),
}


WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # pytest-xdist's, 1 without it


def pytest_configure(config) -> None:
    """Under pytest-xdist (`make test` runs ``-n auto``), each worker takes its share of the
    cores, so that the workers' threads do not outnumber them."""
    if WORKERS > 1:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // WORKERS))


def pytest_collection_modifyitems(items) -> None:
    """Mark each test with its file's tier; under pytest-xdist, hand out the tiers' tests
    first (parity, distributed, slow: the long ones), so that the short ones fill in beside
    them rather than one long test finishing the run alone."""
    rank = {name: i for i, files in enumerate(TIERS.values()) for name in files}
    for item in items:
        for marker, files in TIERS.items():
            if item.path.name in files:
                item.add_marker(marker)
    if WORKERS > 1:
        items.sort(key=lambda item: rank.get(item.path.name, len(TIERS)))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """16 training and 8 validation synthetic images of 64 x 64 pixels."""
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_coco(root / "train", num_images=16, image_size=64, seed=0)
    make_synthetic_coco(root / "val", num_images=8, image_size=64, seed=1)
    return root


@pytest.fixture(scope="session")
def synth_people(tmp_path_factory) -> Path:
    """A person-only keypoint dataset: 16 training and 8 validation stick-figure images."""
    root = tmp_path_factory.mktemp("people")
    make_synthetic_coco(root / "train", num_images=16, image_size=64, seed=0, categories=("person",))
    make_synthetic_coco(root / "val", num_images=8, image_size=64, seed=1, categories=("person",))
    return root


def tiny_config(data_root: Path, *overrides: str, name: str = "tiny_faster_rcnn") -> dict:
    cfg = load_config(TESTS / "configs" / f"{name}.py")
    return apply_overrides(
        cfg,
        [*data_overrides(data_root), *overrides],
    )

import hashlib
import random
import re
import threading

import numpy as np
import pytest
import torch

from detzoo.download import fetch_checkpoint, sha256_file
from detzoo.engine.checkpoint import (
    get_rng_state,
    load_checkpoint,
    publish_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from detzoo.errors import CheckpointError


class Payload:
    """A custom class: pickling it makes a checkpoint that weights-only loading refuses."""


def full_state():
    return {
        "model": {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.ones(2)},
        "meta": {"config": {"lr": 0.02, "steps": (8, 11)}, "iter": 10},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2, 3)}}},
        "scheduler": {"last_epoch": 10},
    }


def test_save_load_round_trip_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a" / "b" / "ckpt.pth"
    save_checkpoint(path, full_state())
    save_checkpoint(path, full_state())  # overwriting works too
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pth"]
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["weight"], full_state()["model"]["weight"])
    assert loaded["meta"] == full_state()["meta"]


def test_failed_save_keeps_old_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"model": {}})
    with pytest.raises(TypeError, match="cannot pickle"):
        save_checkpoint(path, {"model": threading.Lock()})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
    assert load_checkpoint(path) == {"model": {}}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=re.escape(f"{garbage} could not be read")):
        load_checkpoint(garbage)
    good = tmp_path / "good.pth"
    save_checkpoint(good, full_state())
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=re.escape(f"{truncated} could not be read")):
        load_checkpoint(truncated)


def test_custom_objects_are_refused(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + " was refused.*Payload.*may contain code"):
        load_checkpoint(path)


def draw():
    return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pth", {"rng": get_rng_state()})
    expected = draw()
    draw()
    set_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])
    assert draw() == expected


def test_fetch_local_path(tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, full_state())
    assert fetch_checkpoint(str(path), cache_dir=tmp_path / "cache") == path
    assert fetch_checkpoint(str(path), cache_dir=tmp_path / "cache", sha256=sha256_file(path)[:10]) == path
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        fetch_checkpoint(str(path), cache_dir=tmp_path / "cache", sha256="00000000")
    assert path.exists()  # a user's own file is never removed


def test_fetch_file_url_with_hash(tmp_path):
    src = tmp_path / "src" / "model.pth"
    save_checkpoint(src, full_state())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert sha256_file(src) == digest
    cache = tmp_path / "cache"
    fetched = fetch_checkpoint(src.as_uri(), cache_dir=cache, sha256=digest[:8])
    assert fetched == cache / "model.pth" and fetched.read_bytes() == src.read_bytes()
    src.unlink()  # the cached copy is reused, not fetched again
    assert fetch_checkpoint(src.as_uri(), cache_dir=cache) == fetched


def test_fetch_wrong_hash_removes_download(tmp_path):
    src = tmp_path / "src" / "model.pth"
    save_checkpoint(src, full_state())
    cache = tmp_path / "cache"
    actual = sha256_file(src)[:8]
    message = f"{cache / 'model.pth'}: expected prefix deadbeef, got {actual} (file removed)"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        fetch_checkpoint(src.as_uri(), cache_dir=cache, sha256="deadbeef")
    assert list(cache.iterdir()) == []


def test_fetch_checks_mmdet_filename_hash(tmp_path):
    cache = tmp_path / "cache"
    good = tmp_path / "src" / "model.pth"
    save_checkpoint(good, full_state())
    right = good.with_name(f"faster_rcnn_r50_fpn_1x_coco-{sha256_file(good)[:8]}.pth")
    wrong = good.with_name("faster_rcnn_r50_fpn_1x_coco-00000000.pth")
    good.rename(right)
    wrong.write_bytes(right.read_bytes())
    assert fetch_checkpoint(right.as_uri(), cache_dir=cache) == cache / right.name
    with pytest.raises(CheckpointError, match="expected prefix 00000000"):
        fetch_checkpoint(wrong.as_uri(), cache_dir=cache)
    assert not (cache / wrong.name).exists()
    with pytest.raises(CheckpointError, match="could not download"):
        fetch_checkpoint((tmp_path / "absent.pth").as_uri(), cache_dir=cache)
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        fetch_checkpoint("ftp://example.com/a.pth", cache_dir=cache)


def test_publish_checkpoint(tmp_path):
    src = tmp_path / "work" / "iter_100.pth"
    save_checkpoint(src, full_state())
    published = publish_checkpoint(src, tmp_path / "release", name="faster_rcnn_r50_fpn_1x_coco_20240101")
    assert published.name == f"faster_rcnn_r50_fpn_1x_coco_20240101-{sha256_file(published)[:8]}.pth"
    assert [p.name for p in published.parent.iterdir()] == [published.name]
    assert set(load_checkpoint(published)) == {"model", "meta"}
    fetched = fetch_checkpoint(published.as_uri(), cache_dir=tmp_path / "cache")
    assert fetched.read_bytes() == published.read_bytes()
    with pytest.raises(CheckpointError, match=r"lacks keys \['ema'\]"):
        publish_checkpoint(src, tmp_path / "release", name="x", keep_keys=("model", "ema"))
    with pytest.raises(ValueError, match="without '.pth'"):
        publish_checkpoint(src, tmp_path / "release", name="x.pth")

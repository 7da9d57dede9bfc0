"""Tests for detzoo.config: parsing, _base_ inheritance, overrides, key checks, dump/load."""

import copy
import re
from pathlib import Path

import pytest

import detzoo
from detzoo.config import (
    ConfigError,
    apply_overrides,
    check_keys,
    check_signature,
    config_root,
    dump_config,
    load_config,
    merge,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """A small configs tree: model + dataset bases, a mid-level config and a leaf on top of it."""
    write(tmp_path / "_base_/models/frcnn.py", '''"""Base model."""
model = dict(
    backbone=dict(depth=50, norm=dict(type="FrozenBN", eps=1e-5), out_indices=(1, 2, 3)),
    rpn=dict(nms_thresh=0.7, anchor_sizes=[32, 64, 128]),
    roi_heads=dict(num_classes=80, score_thresh=-0.5),
)
''')
    write(tmp_path / "_base_/datasets/coco.py", 'data = dict(root="data/coco", train=["train2017"])\n')
    write(tmp_path / "frcnn/frcnn_r50_fpn_1x_coco.py", '''# mid level: two bases, list form
_base_ = ["../_base_/models/frcnn.py", "../_base_/datasets/coco.py"]
model = dict(roi_heads=dict(num_classes=81))
optim = dict(lr=0.02, steps=(8, 11), warmup=True)
''')
    write(tmp_path / "frcnn/frcnn_r101_fpn_1x_coco.py", '''_base_ = "frcnn_r50_fpn_1x_coco.py"
model = dict(backbone=dict(depth=101, norm=dict(_delete_=True, type="GN", groups=32)),
             rpn=dict(anchor_sizes=[16]))
data = dict(train=["train2017", "val35k"])
''')
    return tmp_path


def test_two_level_inheritance_with_list_base(zoo):
    cfg = load_config(zoo / "frcnn/frcnn_r101_fpn_1x_coco.py")
    assert cfg == {
        "model": {
            "backbone": {"depth": 101, "norm": {"type": "GN", "groups": 32}, "out_indices": (1, 2, 3)},
            "rpn": {"nms_thresh": 0.7, "anchor_sizes": [16]},
            "roi_heads": {"num_classes": 81, "score_thresh": -0.5},
        },
        "data": {"root": "data/coco", "train": ["train2017", "val35k"]},
        "optim": {"lr": 0.02, "steps": (8, 11), "warmup": True},
    }


def test_delete_replaces_base_dict_and_leaves_no_marker():
    base = {"norm": {"type": "BN", "eps": 1e-5, "momentum": 0.1}}
    assert merge(base, {"norm": {"_delete_": True, "type": "GN"}}) == {"norm": {"type": "GN"}}
    assert merge(base, {"norm": {"type": "GN"}}) == {"norm": {"type": "GN", "eps": 1e-5, "momentum": 0.1}}
    assert merge({}, {"a": {"_delete_": True, "b": {"_delete_": True, "c": 1}}}) == {"a": {"b": {"c": 1}}}


def test_a_fragment_in_a_base_list_replaces_what_the_bases_before_it_set(zoo):
    """A base file without bases of its own (a fragment such as _base_/models/fpg.py) keeps
    its _delete_ marks until it is merged onto the bases listed before it."""
    write(zoo / "_base_/models/gn.py", 'model = dict(backbone=dict(norm=dict(_delete_=True, type="GN")))\n')
    write(zoo / "frcnn/frcnn_r50_fpn_gn_1x_coco.py",
          '_base_ = ["../_base_/models/frcnn.py", "../_base_/models/gn.py"]\n')
    cfg = load_config(zoo / "frcnn/frcnn_r50_fpn_gn_1x_coco.py")
    assert cfg["model"]["backbone"]["norm"] == {"type": "GN"}
    assert load_config(zoo / "_base_/models/gn.py") == {"model": {"backbone": {"norm": {"type": "GN"}}}}


def test_lists_and_tuples_are_replaced_not_merged():
    assert merge({"a": [1, 2, 3], "t": (1, 2)}, {"a": [9], "t": (5,)}) == {"a": [9], "t": (5,)}
    assert merge({"a": {"x": 1}}, {"a": [1]}) == {"a": [1]}
    assert merge({"a": [1]}, {"a": {"x": 1}}) == {"a": {"x": 1}}


def test_merge_does_not_mutate_or_share_inputs(zoo):
    base = {"model": {"backbone": {"depth": 50}, "sizes": [32]}}
    child = {"model": {"backbone": {"depth": 101}}, "extra": {"l": [1]}}
    base_before, child_before = copy.deepcopy(base), copy.deepcopy(child)
    out = merge(base, child)
    out["model"]["sizes"].append(64)
    out["extra"]["l"].append(2)
    assert (base, child) == (base_before, child_before)

    first = load_config(zoo / "frcnn/frcnn_r50_fpn_1x_coco.py")
    load_config(zoo / "frcnn/frcnn_r101_fpn_1x_coco.py")  # merges on top of the same bases
    assert load_config(zoo / "frcnn/frcnn_r50_fpn_1x_coco.py") == first
    assert first["model"]["backbone"]["norm"] == {"type": "FrozenBN", "eps": 1e-5}


def test_lookup_by_name_and_suggestion(zoo, monkeypatch):
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(zoo))
    assert load_config("frcnn_r101_fpn_1x_coco") == load_config(zoo / "frcnn/frcnn_r101_fpn_1x_coco.py")
    with pytest.raises(ConfigError, match=r"no config named 'frcnn_r10_fpn_1x_coco'.*did you mean "
                                          r"'frcnn_r101_fpn_1x_coco'"):
        load_config("frcnn_r10_fpn_1x_coco")
    write(zoo / "other/frcnn_r101_fpn_1x_coco.py", "x = 1\n")
    with pytest.raises(ConfigError, match="ambiguous") as info:
        load_config("frcnn_r101_fpn_1x_coco")
    assert "frcnn/frcnn_r101" in str(info.value) and "other/frcnn_r101" in str(info.value)


def test_a_user_config_bases_a_zoo_config_by_name(zoo, tmp_path, monkeypatch):
    """``_base_ = "zoo://NAME"`` from a file outside the zoo: the config ``load_config(NAME)``
    gives, in a list with relative paths too; an unknown name names the file and suggests."""
    monkeypatch.setenv("DETZOO_CONFIG_ROOT", str(zoo))
    mine = write(tmp_path / "elsewhere/mine.py", '_base_ = ["zoo://frcnn_r101_fpn_1x_coco", "extra.py"]\n'
                                                 'model = dict(roi_heads=dict(num_classes=3))\n')
    write(tmp_path / "elsewhere/extra.py", 'optim = dict(lr=0.01)\n')
    expected = load_config("frcnn_r101_fpn_1x_coco")
    expected["model"]["roi_heads"]["num_classes"] = 3
    expected["optim"]["lr"] = 0.01
    assert load_config(mine) == expected
    write(mine, '_base_ = "zoo://frcnn_r10_fpn_1x_coco"\n')
    message = (rf"^{re.escape(str(mine))}: _base_ 'zoo://frcnn_r10_fpn_1x_coco': no config named "
               r"'frcnn_r10_fpn_1x_coco' under .*did you mean 'frcnn_r101_fpn_1x_coco'")
    with pytest.raises(ConfigError, match=message):
        load_config(mine)


def test_the_zoo_ships_in_the_package_and_is_the_default_root(tmp_path, monkeypatch):
    """Without $DETZOO_CONFIG_ROOT names resolve in the package's own configs/ (what a wheel
    installs), from any working directory."""
    monkeypatch.delenv("DETZOO_CONFIG_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert config_root() == Path(detzoo.__file__).resolve().parent / "configs"
    assert (config_root() / "model-index.yml").is_file()
    mine = write(tmp_path / "mine.py", '_base_ = "zoo://faster_rcnn_r50_fpn_1x_coco"\n'
                                       'model = dict(roi_heads=dict(num_classes=3))\n')
    expected = load_config("faster_rcnn_r50_fpn_1x_coco")
    assert expected["model"]["roi_heads"]["num_classes"] == 80
    expected["model"]["roi_heads"]["num_classes"] = 3
    assert load_config(mine) == expected


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.py")
    cfg = write(tmp_path / "a.py", '_base_ = ["missing.py"]\n')
    with pytest.raises(ConfigError, match=r"a\.py: _base_ file 'missing\.py' not found"):
        load_config(cfg)


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.py", '_base_ = "b.py"\n')
    write(tmp_path / "b.py", '_base_ = "a.py"\n')
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.py")


@pytest.mark.parametrize("line, what", [
    ("import os", "import os"),
    ('x = __import__("os")', "__import__"),
    ('x = dict(f=open("/etc/passwd"))', "open("),
    ("x = dict(a=os.sep)", "os.sep"),
    ("x = y", "'y' (Name)"),
    ('x = f"{1}"', "JoinedStr"),
    ("x = 1 + 2", "BinOp"),
    ("x = dict({'a': 1})", "Call"),
    ("x = dict(**{'a': 1})", "Call"),
    ("x = -'a'", "UnaryOp"),
    ("x: int = 1", "AnnAssign"),
    ("x, y = 1, 2", "Assign"),
    ("def f(): pass", "FunctionDef"),
])
def test_refuses_code(tmp_path, line, what):
    path = write(tmp_path / "bad.py", f'"""Doc."""\n# comment\n{line}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:3:" in message and what in message and "not allowed" in message


def test_syntax_error_and_duplicate_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"bad\.py:2: syntax error"):
        load_config(write(tmp_path / "bad.py", "a = 1\nb = (\n"))
    with pytest.raises(ConfigError, match=r"dup\.py:1: key 'a' is given twice"):
        load_config(write(tmp_path / "dup.py", "x = dict(a=1, a=2)\n"))
    with pytest.raises(ConfigError, match=r"dup2\.py:2: key 'x' is given twice"):
        load_config(write(tmp_path / "dup2.py", "x = 1\nx = 2\n"))


def test_literal_forms(tmp_path):
    path = write(tmp_path / "ok.py", "a = {'k': [1, -2.5, None, True], 3: (dict(b='c'),)}\nb = -1e-4\n")
    assert load_config(path) == {"a": {"k": [1, -2.5, None, True], 3: ({"b": "c"},)}, "b": -1e-4}


def test_overrides_parse_values_and_do_not_mutate():
    cfg = {"optim": {"lr": 0.02}, "model": {"backbone": {"depth": 50}}, "data": {"root": "d", "sizes": [1]},
           "flag": False}
    before = copy.deepcopy(cfg)
    out = apply_overrides(cfg, ["optim.lr=0.01", "model.backbone.depth=101", "data.root=/x/y",
                                "data.sizes=[1,2]", "flag=True", "model.backbone=None", "data.root=/x/z=1"])
    assert cfg == before
    assert out == {"optim": {"lr": 0.01}, "model": {"backbone": None},
                   "data": {"root": "/x/z=1", "sizes": [1, 2]}, "flag": True}
    assert type(out["optim"]["lr"]) is float
    assert apply_overrides(cfg, ["model.backbone.depth=101"])["model"]["backbone"]["depth"] == 101


def test_override_errors():
    cfg = {"model": {"backbone": {"depth": 50}, "sizes": [1]}}
    with pytest.raises(ConfigError, match=r"unknown key 'model\.backbone\.dept'; did you mean 'depth'"):
        apply_overrides(cfg, ["model.backbone.dept=101"])
    with pytest.raises(ConfigError, match=r"'model\.sizes' is a list, not a dict"):
        apply_overrides(cfg, ["model.sizes.x=1"])
    for bad in ["model.backbone.depth", "=1", "model..depth=1"]:
        with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
            apply_overrides(cfg, [bad])


def test_check_keys():
    check_keys("model.rpn", {"nms_thresh": 0.7}, ["nms_thresh", "pre_nms_top_n"])
    with pytest.raises(ConfigError, match=r"unknown key 'model\.rpn\.nms_thres'; did you mean 'nms_thresh'\? "
                                          r"\(valid keys: nms_thresh, pre_nms_top_n\)"):
        check_keys("model.rpn", {"nms_thres": 0.7}, ["nms_thresh", "pre_nms_top_n"])
    with pytest.raises(ConfigError, match=r"^unknown key 'zzz' \(valid keys"):
        check_keys("", {"zzz": 1}, ["model"])


class Head:
    def __init__(self, in_channels: int, num_classes: int, *, nms_thresh: float = 0.5):
        pass


def test_check_signature():
    check_signature("model.head", {"num_classes": 80}, Head, exclude=["in_channels"])
    with pytest.raises(ConfigError, match=r"unknown key 'model\.head\.num_clases'; did you mean 'num_classes'"):
        check_signature("model.head", {"num_clases": 80}, Head, exclude=["in_channels"])
    with pytest.raises(ConfigError, match=r"unknown key 'model\.head\.in_channels'"):
        check_signature("model.head", {"in_channels": 3, "num_classes": 80}, Head, exclude=["in_channels"])
    with pytest.raises(ConfigError, match=r"missing required key\(s\) 'model\.head\.in_channels', "
                                          r"'model\.head\.num_classes' for Head"):
        check_signature("model.head", {"nms_thresh": 0.3}, Head)


def test_check_signature_var_kwargs_accepts_anything_but_still_needs_required():
    def build(depth: int, **kwargs):
        pass

    check_signature("backbone", {"depth": 50, "anything": 1}, build)
    with pytest.raises(ConfigError, match=r"missing required key\(s\) 'backbone\.depth'"):
        check_signature("backbone", {"anything": 1}, build)


def test_dump_load_round_trip(zoo, tmp_path):
    cfg = load_config(zoo / "frcnn/frcnn_r101_fpn_1x_coco.py")
    cfg["long"] = {"text": "x" * 300, "labels": {1: "person"}, "neg": -3, "nested": [[{"a": (1,)}]]}
    text = dump_config(cfg)
    assert text.splitlines()[0].startswith("data = ")
    assert load_config(write(tmp_path / "dumped.py", text)) == cfg


def test_dump_refuses_non_plain_data():
    with pytest.raises(ConfigError, match=r"<dump_config key 'a'>:1: syntax error"):
        dump_config({"a": object()})
    with pytest.raises(ConfigError, match=r"<dump_config key 'b'>:1: 'inf' \(Name\) is not allowed"):
        dump_config({"b": float("inf")})
    for key in ["a-b", "class"]:
        with pytest.raises(ConfigError, match="not a valid Python name"):
            dump_config({key: 1})

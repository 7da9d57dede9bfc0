#!/usr/bin/env bash
# detzoo as a user installs it (`make test` runs this after the test suite). From a copy of
# the working tree (the files git tracks or would add) it builds the sdist, then the wheel
# from the sdist; checks that both hold the package with its whole zoo (every file under
# detzoo/, configs included) and no tests or benchmarks; installs the wheel into a fresh
# virtual environment outside the checkout; and, from a temporary folder, runs
# `detzoo --version`, `detzoo zoo list`, load_model(NAME) with random weights and a predict
# on an image for one model of each family, and two iterations of `detzoo train` of a
# config that bases a zoo config by name (`_base_ = "zoo://..."`). Any failing step fails it.
#
# The fresh environment reuses the dependencies installed beside PYTHON instead of
# downloading them (torch alone is gigabytes): a folder of links to the distributions
# detzoo's requirements pull in, and nothing else (not detzoo, not the test packages), is
# put on its path by a .pth file; the environment has no pip or setuptools of its own (PYTHON's
# pip installs into it). pip finds the dependencies there as installed and, with --no-index,
# installs the wheel alone; a requirement the folder lacks fails the install.
#
# Usage: tests/wheel_smoke.sh [PYTHON]   (default: .venv/bin/python, the environment make builds)
set -euo pipefail
unset PYTHONPATH DETZOO_CONFIG_ROOT
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-$REPO/.venv/bin/python}
[[ $PY == /* ]] || PY=$PWD/$PY
WORK=$(mktemp -d "${TMPDIR:-/tmp}/detzoo-wheel-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
VENV=$WORK/venv
SECONDS=0
step() { printf '\n== [%3ds] %s\n' "$SECONDS" "$*"; }

step "sdist, then the wheel from the sdist"
mkdir "$WORK/src" "$WORK/dist" "$WORK/deps" "$WORK/run"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ ! -e $f ]] || printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$WORK/src")
(cd "$WORK/src" && "$PY" -c 'import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])' \
    "$WORK/dist" > "$WORK/build.log" 2>&1) || { cat "$WORK/build.log"; exit 1; }
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --no-cache-dir -w "$WORK/dist" "$WORK"/dist/detzoo-*.tar.gz
WHEEL=$(echo "$WORK"/dist/detzoo-*.whl)

step "what the sdist and the wheel hold"
"$PY" - "$WORK/src" "$WORK/dist" <<'EOF'
import sys, tarfile, zipfile
from pathlib import Path

src, dist = Path(sys.argv[1]), Path(sys.argv[2])
package = {p.relative_to(src).as_posix() for p in (src / "detzoo").rglob("*") if p.is_file()}
zoo = {f for f in package if f.startswith("detzoo/configs/")}
wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
with tarfile.open(sdist) as tar:
    in_sdist = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
assert in_wheel == package, f"wheel: missing {sorted(package - in_wheel)}, extra {sorted(in_wheel - package)}"
assert package <= in_sdist, f"sdist lacks {sorted(package - in_sdist)}"
around = {"PKG-INFO", "README.md", "pyproject.toml", "MANIFEST.in", "setup.cfg"}
extra = sorted(f for f in in_sdist - package if f not in around and not f.startswith("detzoo.egg-info/"))
assert not extra, f"sdist holds more than the package: {extra}"
assert {"detzoo/configs/model-index.yml", "detzoo/configs/_base_/default_runtime.py"} <= zoo
for path, files in ((wheel, zipfile.ZipFile(wheel).namelist()), (sdist, in_sdist)):
    print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB, {len(files)} files")
print(f"both hold the {len(package)} files under detzoo/, {len(zoo)} of them the zoo "
      f"({sum(f.endswith('.py') for f in zoo)} configs and _base_ pieces, "
      f"{sum(f.endswith('metafile.yml') for f in zoo)} metafiles, model-index.yml, README.md); no tests, no benchmarks")
EOF

step "a fresh virtual environment outside the checkout, the wheel installed with --no-index"
"$PY" -m venv --without-pip "$VENV"  # PYTHON's pip installs into it: no setuptools of its own to shadow torch's
"$PY" - "$WHEEL" "$WORK/deps" <<'EOF'
import email, sys, zipfile
from importlib import metadata
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

wheel, deps = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))


def needed(requires, extras):
    """The requirements (strings) that apply here to a distribution asked for with ``extras``."""
    reqs = [Requirement(r) for r in requires or []]
    return [r for r in reqs if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras)]


todo, seen, tops = needed(meta.get_all("Requires-Dist"), [""]), set(), {}
while todo:  # detzoo's requirements (no extras of its own) and theirs, with the extras they ask for
    req = todo.pop()
    extras = [e for e in ("", *req.extras) if (canonicalize_name(req.name), e) not in seen]
    if not extras:
        continue
    seen.update((canonicalize_name(req.name), e) for e in extras)
    dist = metadata.distribution(req.name)
    for f in dist.files:
        if f.parts[0] not in ("..", "__pycache__"):
            tops[f.parts[0]] = dist.locate_file(f.parts[0])
    todo += needed(dist.requires, extras)
for name, target in tops.items():
    (deps / name).symlink_to(target)
names = sorted({name for name, _ in seen})
print(f"reusing {len(names)} installed distributions: {', '.join(names)}")
EOF
"$VENV/bin/python" -c 'import site, sys; print(sys.argv[1], file=open(site.getsitepackages()[0] + "/detzoo_smoke_deps.pth", "w"))' \
    "$WORK/deps"
"$PY" -m pip --python "$VENV/bin/python" install --no-index --no-cache-dir --disable-pip-version-check "$WHEEL" \
    > "$WORK/pip.log"
grep -v "already satisfied" "$WORK/pip.log"
echo "($(grep -c "already satisfied" "$WORK/pip.log") requirements already satisfied from $WORK/deps)"
"$PY" -m pip --python "$VENV/bin/python" show --verbose detzoo

cd "$WORK/run"
step "$ detzoo --version  (in $PWD)"
"$VENV/bin/detzoo" --version

step "$ detzoo zoo list"
"$VENV/bin/detzoo" zoo list > zoo_list.txt
head -n 3 zoo_list.txt
echo "... $(($(wc -l < zoo_list.txt) - 1)) models"
grep -q "^faster_rcnn_r50_fpn_1x_coco " zoo_list.txt

step "$ detzoo data synth: 8 training and 4 validation images"
"$VENV/bin/detzoo" data synth --out synth/train --num-images 8
"$VENV/bin/detzoo" data synth --out synth/val --num-images 4 --seed 1

step "load_model(NAME): random weights, score threshold 0, test scale 320; predict on one image: each family"
"$VENV/bin/python" - <<'EOF'
import sys, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import detzoo
from detzoo.config import load_config
from detzoo.engine.inference import predict_images
from detzoo.structures import Instances

assert Path(detzoo.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), detzoo.__file__
print(f"detzoo {detzoo.__version__} from {Path(detzoo.__file__).parent}")
image = Path("synth/val/images/000001.png")
height, width = np.asarray(Image.open(image)).shape[:2]
proposals = None
for name in ("faster_rcnn_r50_fpn_1x_coco", "mask_rcnn_r50_fpn_1x_coco", "keypoint_rcnn_r50_caffe_fpn_1x_coco",
             "retinanet_r50_fpn_1x_coco", "rpn_r50_fpn_1x_coco", "fast_rcnn_r50_fpn_1x_coco"):
    start = time.perf_counter()
    heads = [k for k, v in load_config(name)["model"].items() if isinstance(v, dict) and "score_thresh" in v]
    sets = ["data.test_scale=320", *(f"model.{head}.score_thresh=0.0" for head in heads)]
    model = detzoo.load_model(name, overrides=sets)
    if name.startswith("fast_rcnn"):  # from precomputed proposals: the RPN's above
        pixels = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1).float()
        r = predict_images(model.model, [pixels], transform=model.transform, proposals=[proposals])[0]
        pred = {"boxes": r.boxes.numpy(), "scores": r.scores.numpy()}
    else:
        pred = model.predict([str(image)])[0]
    n = len(pred["boxes"])
    assert n > 0 and pred["boxes"].shape == (n, 4) and len(pred["scores"]) == n, name
    assert "masks" not in pred or pred["masks"].shape == (n, height, width), name
    assert "keypoints" not in pred or pred["keypoints"].shape == (n, 17, 3), name
    if name.startswith("rpn"):
        proposals = Instances(boxes=torch.from_numpy(pred["boxes"]), labels=torch.zeros(n, dtype=torch.int64))
    print(f"{name:40s} {n:4d} detections, {', '.join(k for k in pred if k != 'class_names'):40s} "
          f"{time.perf_counter() - start:5.1f} s")
EOF

step "$ detzoo train my_detector.py  (_base_ = \"zoo://faster_rcnn_r18_fpn_synth\"), 2 iterations"
cat > my_detector.py <<'EOF'
_base_ = "zoo://faster_rcnn_r18_fpn_synth"
data = dict(
    train=dict(ann_file="synth/train/annotations.json", img_dir="synth/train/images"),
    val=dict(ann_file="synth/val/annotations.json", img_dir="synth/val/images"),
    images_per_gpu=2,
    num_workers=0,
)
optim = dict(warmup_iters=1)
schedule = dict(iters=2, steps=(1,))
runtime = dict(log_interval=1, checkpoint_interval=2, eval_interval=2)
EOF
"$VENV/bin/detzoo" train my_detector.py --work-dir work > train.log 2>&1 || { cat train.log; exit 1; }
tr '\r' '\n' < train.log | grep -v -e "inference:" -e "^ *$" | tail -n 5
test -f work/model_final.pth
ls work
step "passed"

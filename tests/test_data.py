"""Data pipeline: COCO loading and its bad-input rules, transforms, sampler, synthetic data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detzoo.data.coco import CocoDataset, DataError, Sample
from detzoo.data.loader import GroupedBatchSampler, build_test_loader, build_train_loader
from detzoo.data.synthetic import SHAPES, PERSON_KEYPOINTS, make_synthetic_coco
from detzoo.data.transforms import RandomFlip, Resize, build_transforms, keypoint_flip_map
from detzoo.structures import Instances

COCO_DIR = Path(__file__).parent / "data" / "coco"
CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]


def write_coco(root: Path, annotations: list[dict], categories: list[dict] = CATEGORIES) -> Path:
    """Images 1.. of the given (h, w) under root/images and an annotation file; returns it."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for image_id, (h, w) in enumerate([(40, 60), (50, 30)], start=1):
        name = f"{image_id}.png"
        Image.fromarray(np.full((h, w, 3), 10 * image_id, dtype=np.uint8)).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    for i, ann in enumerate(annotations, start=1):
        ann.setdefault("id", i)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", 7)
        ann.setdefault("image_id", 1)
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def make(tmp_path: Path, annotations: list[dict], categories: list[dict] = CATEGORIES, **kwargs) -> CocoDataset:
    return CocoDataset(write_coco(tmp_path, annotations, categories), tmp_path / "images", **kwargs)


def test_labels_follow_sorted_category_ids(tmp_path):
    ds = make(tmp_path, [{"bbox": [1, 2, 10, 20]}, {"bbox": [0, 0, 5, 5], "category_id": 3, "image_id": 2}])
    assert ds.cat_ids == [3, 7] and ds.class_names == ["dog", "cat"] and ds.image_ids == [1, 2]
    sample = ds[0]
    assert isinstance(sample, Sample) and sample.image.shape == (3, 40, 60) and sample.image.dtype == torch.float32
    assert sample.image.max() == 10 and sample.original_size == (40, 60) and sample.file_name == "1.png"
    assert sample.instances.boxes.tolist() == [[1, 2, 11, 22]] and sample.instances.labels.tolist() == [1]
    assert ds[1].instances.labels.tolist() == [0]
    assert ds.aspect_ratio_flags() == [1, 0]


def test_missing_image_file_listed_at_construction(tmp_path):
    ann_file = write_coco(tmp_path, [])
    (tmp_path / "images" / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) missing .*: 2\.png"):
        CocoDataset(ann_file, tmp_path / "images")


def test_corrupt_or_resized_image_named_at_load(tmp_path):
    ds = make(tmp_path, [])
    (tmp_path / "images" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*1.png: UnidentifiedImageError"):
        ds[0]
    Image.new("RGB", (31, 50)).save(tmp_path / "images" / "2.png")
    with pytest.raises(DataError, match=r"2.png is 31x50 .* but 30x50 in the annotation file$"):
        ds[1]


def test_degenerate_boxes_skipped_and_logged(tmp_path, caplog):
    boxes = [[1, 1, 0, 5], [1, 1, 5, -2], [70, 1, 5, 5], [-20, -20, 5, 5], [1, 1, 5, 5]]
    ds = make(tmp_path, [{"bbox": b} for b in boxes])
    assert ds[0].instances.boxes.tolist() == [[1, 1, 6, 6]]
    assert "skipped degenerate boxes" in caplog.text and "4 annotation(s), ids 1, 2, 3, 4" in caplog.text


def test_boxes_partly_outside_clipped_and_logged(tmp_path, caplog):
    ds = make(tmp_path, [{"bbox": [-5, 30, 20, 20]}, {"bbox": [50, -1, 20, 5]}])
    assert ds[0].instances.boxes.tolist() == [[0, 30, 15, 40], [50, 0, 60, 4]]
    assert "clipped boxes partly outside the image: 2 annotation(s), ids 1, 2" in caplog.text


def test_unknown_category_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="annotation 1 .*image 2.* category id 5"):
        make(tmp_path, [{"bbox": [1, 1, 5, 5], "image_id": 2, "category_id": 5}])


def test_unknown_image_id_and_bad_bbox_are_errors(tmp_path):
    with pytest.raises(ValueError, match="annotation 1 refers to image id 9"):
        make(tmp_path, [{"bbox": [1, 1, 5, 5], "image_id": 9}])
    with pytest.raises(ValueError, match=r"annotation 1 \(image 1\) has bbox \[1, 1, 5\]"):
        make(tmp_path, [{"bbox": [1, 1, 5]}])


def test_empty_images_kept_or_dropped(tmp_path, caplog):
    annotations = [{"bbox": [1, 1, 5, 5]}, {"bbox": [1, 1, 5, 5], "image_id": 2, "iscrowd": 1}]
    ds = make(tmp_path, annotations)
    assert len(ds) == 2 and len(ds[1].instances) == 0 and ds[1].instances.boxes.shape == (0, 4)
    caplog.set_level(logging.INFO, logger="detzoo.data")
    ds = make(tmp_path, annotations, filter_empty=True)
    assert ds.image_ids == [1] and "dropped 1 images without valid annotations" in caplog.text


def test_crowd_annotations_excluded_but_kept_for_evaluation(tmp_path):
    ds = make(tmp_path, [{"bbox": [1, 1, 5, 5], "iscrowd": 1}, {"bbox": [2, 2, 5, 5]}])
    assert ds[0].instances.boxes.tolist() == [[2, 2, 7, 7]]
    assert len(ds.coco.getAnnIds(imgIds=[1])) == 2


def test_masks_from_polygons_and_rle(tmp_path, caplog):
    rle = {"size": [40, 60], "counts": [40 * 10, 40 * 5, 40 * 45]}  # columns 10..14, uncompressed
    annotations = [
        {"bbox": [2, 2, 8, 6], "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
        {"bbox": [10, 0, 5, 40], "segmentation": rle},
        {"bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 5, 5]]},  # fewer than 3 points
    ]
    ds = make(tmp_path, annotations, with_masks=True)
    masks = ds[0].instances.masks
    assert ds[1].instances.masks.shape == (0, 50, 30)
    assert masks.dtype == torch.uint8 and masks.shape == (2, 40, 60)
    assert masks[1].sum() == 200 and masks[1][:, 10:15].all()
    ys, xs = masks[0].nonzero(as_tuple=True)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (2, 2, 9, 7)
    assert "without a valid polygon or RLE: 1 annotation(s), ids 3" in caplog.text
    rle["size"] = [41, 60]
    with pytest.raises(ValueError, match=r"annotation 2 \(image 1\) has an RLE of size \[41, 60\]"):
        make(tmp_path, annotations, with_masks=True)


def test_keypoints_from_categories(tmp_path):
    categories = [{**CATEGORIES[0], "keypoints": ["left_eye", "right_eye"]}, CATEGORIES[1]]
    annotations = [{"bbox": [1, 1, 5, 5], "keypoints": [2, 3, 2, 4, 5, 1]}, {"bbox": [1, 1, 5, 5], "category_id": 3}]
    ds = make(tmp_path, annotations, categories, with_keypoints=True)
    assert ds.keypoint_names == ["left_eye", "right_eye"]
    assert ds[0].instances.keypoints.tolist() == [[[2, 3, 2], [4, 5, 1]], [[0, 0, 0], [0, 0, 0]]]
    assert ds[1].instances.keypoints.shape == (0, 2, 3)
    annotations[0]["keypoints"] = [2, 3, 2]
    with pytest.raises(DataError, match=r"annotation 1 \(image 1\) has keypoints \[2, 3, 2\], expected 3 x 2 finite"):
        make(tmp_path, annotations, categories, with_keypoints=True)
    with pytest.raises(ValueError, match="no category lists keypoint names"):
        make(tmp_path, [], with_keypoints=True)


def random_instances(h: int, w: int, n: int = 5) -> Instances:
    gen = torch.Generator().manual_seed(h * w)
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w / 2, h / 2])
    wh = torch.rand(n, 2, generator=gen) * torch.tensor([w / 2, h / 2]) + 1
    keypoints = torch.rand(n, 3, 3, generator=gen) * torch.tensor([w, h, 2.0])
    return Instances(
        boxes=torch.cat([xy, xy + wh], dim=1),
        labels=torch.arange(n),
        masks=(torch.rand(n, h, w, generator=gen) > 0.5).to(torch.uint8),
        keypoints=keypoints.round(),
    )


@pytest.mark.parametrize(
    "hw,short,max_size", [((37, 53), 20, 40), ((53, 37), 50, 60), ((30, 45), 64, 70), ((480, 640), 800, 1333)]
)
def test_resize_matches_torchvision(hw, short, max_size):
    h, w = hw
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    inst = random_instances(h, w)
    ours, resized = Resize(scales=(short,), max_size=max_size)(image, inst)
    tv = GeneralizedRCNNTransform(min_size=short, max_size=max_size, image_mean=[0, 0, 0], image_std=[1, 1, 1])
    tv.eval()
    target = {"boxes": inst.boxes.clone(), "masks": inst.masks.clone(), "keypoints": inst.keypoints.clone()}
    batch, (tv_target,) = tv([image / 255], [target])
    nh, nw = batch.image_sizes[0]
    assert ours.shape == (3, nh, nw)
    torch.testing.assert_close(ours, batch.tensors[0, :, :nh, :nw] * 255, atol=1e-3, rtol=0)
    assert torch.equal(resized.boxes, tv_target["boxes"])
    assert torch.equal(resized.masks, tv_target["masks"])
    assert torch.equal(resized.keypoints, tv_target["keypoints"])
    assert torch.equal(resized.labels, inst.labels)


def test_hflip_box_by_hand_and_twice_is_identity():
    image = torch.arange(30.0).reshape(1, 3, 10).expand(3, 3, 10)
    inst = Instances(
        boxes=torch.tensor([[1.0, 0.0, 4.0, 2.0]]),
        labels=torch.tensor([0]),
        masks=torch.zeros(1, 3, 10, dtype=torch.uint8).index_fill_(2, torch.tensor([1, 2, 3]), 1),
    )
    hflip = RandomFlip(prob=1.0)
    flipped_image, flipped = hflip(image, inst)
    assert flipped.boxes.tolist() == [[6.0, 0.0, 9.0, 2.0]]
    assert flipped.masks[0, 0].nonzero().flatten().tolist() == [6, 7, 8]
    assert flipped_image[0, 0, 0] == 9
    image2, inst2 = hflip(flipped_image, flipped)
    assert torch.equal(image2, image) and torch.equal(inst2.boxes, inst.boxes)
    assert torch.equal(inst2.masks, inst.masks)


def test_hflip_swaps_keypoints():
    names = ["nose", "left_eye", "right_eye"]
    flip_map = keypoint_flip_map(names)
    assert flip_map == [(1, 2)]
    keypoints = torch.tensor([[[5.0, 1.0, 2.0], [6.0, 1.0, 2.0], [4.0, 1.0, 1.0]]])
    inst = Instances(boxes=torch.tensor([[3.0, 0.0, 7.0, 2.0]]), labels=torch.tensor([0]), keypoints=keypoints)
    hflip = RandomFlip(prob=1.0, flip_map=tuple(flip_map))
    _, flipped = hflip(torch.zeros(3, 4, 10), inst)
    assert flipped.keypoints.tolist() == [[[5.0, 1.0, 2.0], [6.0, 1.0, 1.0], [4.0, 1.0, 2.0]]]
    assert torch.equal(hflip(torch.zeros(3, 4, 10), flipped)[1].keypoints, keypoints)
    assert keypoint_flip_map(PERSON_KEYPOINTS) == [(i, i + 1) for i in range(1, 17, 2)]


def test_build_transforms_seeded_multiscale_and_test_scale():
    image, inst = torch.rand(3, 20, 30), random_instances(20, 30)
    train = build_transforms(train=True, scales=(10, 12, 14), max_size=100)

    def run() -> list[tuple[int, float]]:
        torch.manual_seed(0)
        return [(out.shape[-2], b.boxes[0, 0].item()) for out, b in (train(image, inst) for _ in range(30))]

    outcomes = run()
    assert outcomes == run()
    assert {h for h, _ in outcomes} == {10, 12, 14}
    assert len({x for _, x in outcomes}) == 6  # 3 scales x 2 flips
    test = build_transforms(train=False, scales=(10, 12, 14), max_size=100)
    expected = Resize(scales=(14,), max_size=100)(image, inst)[1].boxes
    state = torch.get_rng_state()
    assert all(torch.equal(test(image, inst)[1].boxes, expected) for _ in range(5))
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="flip_prob"):
        build_transforms(train=True, flip_prob=2)


def test_grouped_sampler_deterministic_grouped_and_sharded():
    groups = [i % 3 == 0 for i in range(50)]  # 17 of group 1, 33 of group 0
    sampler = GroupedBatchSampler(groups, batch_size=4, seed=1)
    assert len(sampler) == 4 + 8 == len(list(sampler))
    first = list(sampler)
    assert first == list(GroupedBatchSampler(groups, batch_size=4, seed=1))
    assert all(len(b) == 4 and len({groups[i] for i in b}) == 1 for b in first)
    sampler.set_epoch(1)
    assert list(sampler) != first
    ranks = [GroupedBatchSampler(groups, batch_size=4, seed=1, rank=r, world_size=5) for r in range(5)]
    for r in ranks:
        r.set_epoch(1)
    shards = [[i for b in r for i in b] for r in ranks]
    assert [len(r) for r in ranks] == [2] * 5 and all(len(s) == 8 for s in shards)
    assert len(set().union(*shards)) == 40 and set().union(*shards) <= {i for b in sampler for i in b}
    with pytest.raises(ValueError, match="no batch"):
        GroupedBatchSampler([0, 1, 1], batch_size=4)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_synthetic_coco(
        tmp_path_factory.mktemp("synth"), num_images=6, image_size=96, seed=0, categories=(*SHAPES, "person")
    )


def test_synthetic_is_deterministic(synthetic, tmp_path):
    again = make_synthetic_coco(tmp_path, num_images=6, image_size=96, seed=0, categories=(*SHAPES, "person"))
    assert (again / "annotations.json").read_text() == (synthetic / "annotations.json").read_text()
    assert (again / "images" / "000004.png").read_bytes() == (synthetic / "images" / "000004.png").read_bytes()


def test_synthetic_loads_with_masks_and_keypoints(synthetic):
    ds = CocoDataset(
        synthetic / "annotations.json", synthetic / "images", with_masks=True, with_keypoints=True
    )
    assert ds.class_names == ["circle", "square", "triangle", "person"]
    assert ds.keypoint_names == list(PERSON_KEYPOINTS)
    seen = set()
    for sample in ds:
        inst = sample.instances
        assert sample.image.shape == (3, 96, 96) and inst.keypoints.shape == (len(inst), 17, 3)
        for box, mask, label, kps in zip(inst.boxes, inst.masks, inst.labels, inst.keypoints):
            ys, xs = mask.nonzero(as_tuple=True)
            extent = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            assert (extent - box).abs().max() <= 1.5
            is_person = label == 3
            assert torch.equal(kps[:, 2], torch.full((17,), 2.0 if is_person else 0.0))
            if is_person:
                assert (kps[:, 0] >= box[0]).all() and (kps[:, 0] <= box[2]).all()
                assert (kps[:, 1] >= box[1]).all() and (kps[:, 1] <= box[3]).all()
            seen.add(int(label))
    assert seen == {0, 1, 2, 3}


def test_train_and_test_loaders(synthetic):
    transforms = build_transforms(train=True, scales=(48, 64), max_size=100)
    ds = CocoDataset(synthetic / "annotations.json", synthetic / "images", transforms=transforms)
    loader = build_train_loader(ds, batch_size=2, num_workers=0, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert all(len(b) == 2 and isinstance(b[0], Sample) for b in batches)
    assert all(min(s.image.shape[-2:]) in (48, 64) for b in batches for s in b)
    assert sorted(s.image_id for b in batches for s in b) == ds.image_ids
    test = [s.image_id for b in build_test_loader(ds, batch_size=4) for s in b]
    assert test == ds.image_ids


def test_real_coco_images_with_masks():
    ds = CocoDataset(COCO_DIR / "annotations.json", COCO_DIR / "images", with_masks=True)
    assert len(ds.class_names) == 80 and ds.class_names[0] == "person" and ds.image_ids == [338, 446, 536]
    assert ds.aspect_ratio_flags() == [1, 0, 1]
    for sample in ds:
        inst = sample.instances
        anns = [a for a in ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[sample.image_id])) if not a["iscrowd"]]
        assert sample.image.shape[-2:] == sample.original_size and len(inst) == len(anns) >= 6
        assert [ds.cat_ids[label] for label in inst.labels] == [a["category_id"] for a in anns]
        assert len(set(inst.labels.tolist())) >= 4
        for box, mask in zip(inst.boxes, inst.masks):
            ys, xs = mask.nonzero(as_tuple=True)
            extent = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            assert (extent - box).abs().max() <= 3.0  # pycocotools drops slivers of thin polygons

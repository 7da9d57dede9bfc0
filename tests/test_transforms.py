"""Transform steps: crop consistency, random resize ratio, fixed-size pad, the crop640
training pipeline, and mmdetection's resize convention against mmcv itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detzoo.config import load_config
from detzoo.data.build import build_transform
from detzoo.data.coco import CocoDataset
from detzoo.data.images import read_image
from detzoo.data.transforms import Compose, Normalize, Pad, RandomCrop, RandomFlip, Resize
from detzoo.structures import Instances, PixelFormat, scale_boxes
from devtools.reference_models import import_mmdet

TESTS = Path(__file__).parent
COCO_DIR = TESTS / "data" / "coco"
IMAGES = sorted((COCO_DIR / "images").glob("*.jpg"))
CROP640 = TESTS.parent / "detzoo" / "configs" / "_base_" / "datasets" / "coco_detection_crop640.py"
PIXELS = PixelFormat(channel_order="BGR", scale=1.0, mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395))


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """Channel 0 holds the row, channel 1 the column: a crop tells its own offset."""
    rows = torch.arange(float(h))[:, None].expand(h, w)
    cols = torch.arange(float(w))[None, :].expand(h, w)
    return torch.stack([rows, cols, torch.zeros(h, w)])


def test_crop_keeps_or_drops_each_instance_whole():
    image, crop = coordinate_image(40, 50), RandomCrop(size=(16, 20))
    cropped = crop(image, generator=torch.Generator().manual_seed(5))[0]
    top, left = int(cropped[0, 0, 0]), int(cropped[1, 0, 0])
    assert cropped.shape == (3, 16, 20) and torch.equal(cropped, image[:, top : top + 16, left : left + 20])
    assert top >= 4 and left >= 6  # room for the instance left of the crop below

    # inside the crop, outside it (to its left), partly inside (left and bottom edges)
    boxes = torch.tensor(
        [
            [left + 2, top + 3, left + 8, top + 9],
            [left - 6, top + 2, left - 1, top + 7],
            [left - 4, top + 10, left + 5, top + 20],
        ]
    )
    masks = torch.zeros(3, 40, 50, dtype=torch.uint8)
    bits = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0)) > 0.3
    for mask, box, bit in zip(masks, boxes.tolist(), bits):
        x1, y1, x2, y2 = box
        mask[y1:y2, x1:x2] = bit[y1:y2, x1:x2]
    keypoints = torch.tensor(
        [
            [[left + 3, top + 4, 2], [left + 7, top + 8, 1]],
            [[left - 5, top + 3, 2], [left - 2, top + 6, 2]],
            [[left - 2, top + 12, 2], [left + 3, top + 14, 2]],  # the first lies outside the crop
        ],
        dtype=torch.float32,
    )
    truth = Instances(
        boxes=boxes.float(),
        labels=torch.tensor([3, 4, 5]),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        masks=masks,
        keypoints=keypoints,
    )
    proposals = Instances(boxes=boxes[:2].float(), labels=torch.zeros(2, dtype=torch.int64), scores=torch.ones(2))

    out_image, out, out_proposals = crop(image, truth, proposals, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out_image, cropped)
    assert out.labels.tolist() == [3, 5] and out.scores.tolist() == pytest.approx([0.9, 0.7])
    assert out.boxes.tolist() == [[2, 3, 8, 9], [0, 10, 5, 16]]
    assert out.masks.shape == (2, 16, 20) and out.masks.dtype == torch.uint8
    assert torch.equal(out.masks, masks[[0, 2], top : top + 16, left : left + 20]) and out.masks.sum() > 0
    assert out.keypoints.tolist() == [[[3, 4, 2], [7, 8, 1]], [[-2, 12, 0], [3, 14, 2]]]
    assert out_proposals.boxes.tolist() == [[2, 3, 8, 9]] and out_proposals.scores.tolist() == [1.0]


def test_crop_larger_than_image_draws_nothing():
    image = coordinate_image(20, 30)
    truth = Instances(boxes=torch.tensor([[1.0, 2.0, 5.0, 6.0]]), labels=torch.tensor([0]))
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out_image, out = RandomCrop(size=(64, 64))(image, truth, generator=generator)
    assert torch.equal(out_image, image) and torch.equal(out.boxes, truth.boxes)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("convention", ["torchvision", "mmdet"])
def test_resize_ratio_range_draws_within_range_and_boxes_follow(convention):
    image = torch.randint(0, 256, (3, 40, 60), generator=torch.Generator().manual_seed(0)).float()
    truth = Instances(boxes=torch.tensor([[4.0, 5.0, 30.0, 38.0], [0.0, 0.0, 60.0, 40.0]]), labels=torch.tensor([1, 2]))
    resize = Resize(scales=(64,), max_size=64, ratio_range=(0.8, 1.2), convention=convention)
    sizes = set()
    for seed in range(20):
        out_image, out = resize(image, truth, generator=torch.Generator().manual_seed(seed))
        size = tuple(out_image.shape[-2:])
        assert int(64 * 0.8) <= size[1] <= int(64 * 1.2) and size[1] > size[0]  # the long side is 64 r
        assert torch.equal(out.boxes, scale_boxes(truth.boxes, (40, 60), size))
        assert out.boxes[1].tolist() == pytest.approx([0, 0, size[1], size[0]], abs=1e-4)
        again = resize(image, truth, generator=torch.Generator().manual_seed(seed))[0]
        assert torch.equal(again, out_image)
        sizes.add(size)
    assert len(sizes) >= 5


def test_pad_zeros_to_fixed_size_instances_unchanged():
    image = torch.rand(3, 5, 7) + 1
    truth = Instances(boxes=torch.tensor([[1.0, 1.0, 4.0, 3.0]]), labels=torch.tensor([0]), masks=torch.ones(1, 5, 7))
    out_image, out = Pad(size=(8, 10))(image, truth)
    assert out_image.shape == (3, 8, 10) and torch.equal(out_image[:, :5, :7], image)
    assert out_image[:, 5:].abs().sum() == 0 and out_image[:, :, 7:].abs().sum() == 0
    assert out is truth
    with pytest.raises(ValueError, match="larger than the pad size"):
        Pad(size=(4, 10))(image)


def test_crop640_pipeline_on_real_images():
    data = load_config(CROP640)["data"]
    train = build_transform(data, PIXELS, train=True)
    assert [type(s) for s in train.steps] == [Resize, Normalize, RandomCrop, RandomFlip, Pad]
    test = build_transform(data, PIXELS, train=False)
    assert [type(s) for s in test.steps] == [Resize, Normalize]
    dataset = CocoDataset(COCO_DIR / "annotations.json", COCO_DIR / "images", with_masks=True, transforms=train)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for sample in dataset:
            inst = sample.instances
            assert sample.image.shape == (3, 640, 640)
            assert inst.masks.shape[0] == len(inst.boxes) == len(inst.labels)
            assert inst.masks.shape[-2] <= 640 and inst.masks.shape[-1] <= 640
            assert (inst.boxes[:, 2:] > inst.boxes[:, :2]).all() and inst.boxes.min() >= 0
            assert inst.boxes[:, 2].max() <= inst.masks.shape[-1] and inst.boxes[:, 3].max() <= inst.masks.shape[-2]
    for path in IMAGES:  # test: fit in 640 x 640
        image = test(read_image(path))[0]
        assert max(image.shape[-2:]) == 640


def test_default_pipeline_normalises_before_resizing():
    data = load_config(TESTS.parent / "detzoo" / "configs" / "_base_" / "datasets" / "coco_detection.py")["data"]
    train = build_transform(data, PIXELS, train=True)
    assert [type(s) for s in train.steps] == [Normalize, Resize, RandomFlip]
    assert train.steps[1] == Resize(scales=(800,), max_size=1333)


def test_mmdet_resize_needs_pixels_before_normalize():
    image = torch.rand(3, 10, 12) * 255
    with pytest.raises(ValueError, match="resize before Normalize"):
        Resize(scales=(8,), max_size=20, convention="mmdet")(image)


@pytest.mark.parametrize("scale", [(1333, 800), (640, 640)], ids=["1333x800", "640x640"])
@pytest.mark.parametrize("path", IMAGES, ids=[p.stem for p in IMAGES])
def test_mmdet_resize_matches_mmcv_and_mmdet(path, scale):
    import_mmdet()
    import mmcv
    from mmdet.datasets.transforms import Resize as MMDetResize
    from mmdet.structures.bbox import HorizontalBoxes

    pixels = np.asarray(Image.open(path).convert("RGB"))
    expected, _ = mmcv.imrescale(pixels, scale, return_scale=True)
    boxes = torch.tensor([[10.5, 20.25, 200.0, 300.0], [0.0, 0.0, pixels.shape[1], pixels.shape[0]]])
    truth = Instances(boxes=boxes, labels=torch.tensor([0, 1]))
    ours = Resize(scales=(min(scale),), max_size=max(scale), convention="mmdet")
    image, resized = ours(read_image(path), truth)
    assert image.shape == (3, *expected.shape[:2])
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1).float())

    reference = MMDetResize(scale=scale, keep_ratio=True)(dict(img=pixels, gt_bboxes=HorizontalBoxes(boxes.clone())))
    assert np.array_equal(reference["img"], expected)
    torch.testing.assert_close(resized.boxes, reference["gt_bboxes"].tensor, rtol=1e-6, atol=1e-4)

    # the torchvision arithmetic differs, so the comparison above can fail (unless the
    # image keeps its size, as 000000000338 does in 640 x 640)
    torchvision = Resize(scales=(min(scale),), max_size=max(scale))(read_image(path))[0]
    resampled = image.shape[-2:] != pixels.shape[:2]
    assert resampled != (torchvision.shape == image.shape and torch.equal(torchvision, image))

    # with Normalize after it, the pipeline feeds the model mmdetection's pixels normalised
    composed = Compose(steps=(ours, Normalize(pixel_format=PIXELS)))
    torch.testing.assert_close(composed(read_image(path))[0], PIXELS.normalize(image), rtol=0, atol=0)

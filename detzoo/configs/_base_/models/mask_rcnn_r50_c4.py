"""Mask R-CNN R-50-C4: Faster R-CNN R-50-C4 plus a mask branch that pools 14x14 from
res4 and reuses the box head's res5 (7x7 out), then a 2x2 deconv of 256 channels and the
per-class predictor: 14x14 masks, as Detectron's C4 mask head."""

_base_ = "faster_rcnn_r50_c4.py"
model = dict(
    roi_heads=dict(
        mask=dict(
            in_features=["c4"],
            pooler=dict(output_size=14, sampling_ratio=0, aligned=True),
            head=dict(num_convs=0, conv_dim=256),
        ),
    ),
)

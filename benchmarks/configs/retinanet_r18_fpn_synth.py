"""RetinaNet R-18-FPN (the structure of detzoo/configs/retinanet/retinanet_r50_fpn_1x_coco.py:
P3-P5 from C3-C5, P6 / P7 by stride-2 convs on C5, 9 anchors per location, two 4-conv
towers, focal loss) on the synthetic shapes, with the demo's changes: R-18 with BN with
gradients and no frozen stages, anchors halved (16-256 px times 2^(0, 1/3, 2/3)),
128-channel FPN and head towers, 128-pixel input, batch 8, lr 0.04 at batch 16 with a
short warmup, 3 classes.

One change of structure: BN per level after every head conv (NAS-FPN's head, mmdetection's
``RetinaSepBNHead``). The zoo row's unnormalised towers (four convs initialised at std 0.01)
pass about 1e-3 of the signal, so from scratch the head and backbone barely move in 400
iterations: box AP 0.0 after 400 iterations for detzoo and for torchvision's RetinaNet in
the same setting (lr x5 diverges); 14.3 with BN in the head. Given time the plain head
learns: box AP 24.7 / AP50 40.0 after 2000 iterations with gradients clipped at 35
(``--iters 2000 --set model.dense_head.head.norm=None --set optim.grad_clip=35``; without
clipping a 3000-iteration run diverged at iteration 171)."""

_base_ = [
    "zoo://retinanet_r50_fpn_1x_coco",
    "zoo://synth_shapes_cpu",
]
model = dict(
    backbone=dict(depth=18, norm="BN", frozen_stages=0, init=None),
    neck=dict(out_channels=128),
    dense_head=dict(
        num_classes=3,
        anchor_generator=dict(
            sizes=[
                [16, 20.158737, 25.398417],
                [32, 40.317474, 50.796834],
                [64, 80.634947, 101.593667],
                [128, 161.269894, 203.187335],
                [256, 322.539789, 406.374669],
            ],
        ),
        head=dict(conv_dim=128, norm="BN"),
    ),
)

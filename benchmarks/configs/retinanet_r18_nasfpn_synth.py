"""RetinaNet R-18-NASFPN on the synthetic shapes: retinanet_r18_fpn_synth.py with the
changes of detzoo/configs/retinanet/retinanet_r50_nasfpn_crop640_50e_coco.py: NAS-FPN of 7 stages
over C3-C5 (128 channels) with BN in the neck and per level in the head, negatives below
IoU 0.5, batch padded to /128; the crop recipe at 128 px (mmdetection resize to 128 x
0.8-1.2, random 128 x 128 crop, pad to 128 x 128), no weight decay on norms, warmup from
0.1 x lr. BN where the zoo row has SyncBN (one process).

Does not learn within the 400-iteration benchmark (box AP 0.3, AP50 1.1; the output is the
same prior boxes whatever the image); it does over 3000 iterations (``--iters 3000``: box AP
2.2 at iteration 1000, 9.4 / AP50 15.9 at the end). At init the stacked stages amplify the box-loss
gradient into the backbone about 1.6x per stage (gradient norm of the first batch 32, 63,
161, 358 with 1, 3, 5, 7 stages; 24 for retinanet_r18_fpn_synth), most of it in the stem.
The zoo row's lr (0.01 at batch 8, AP 0.3) and gradient clipping at 35 (AP 0.4) do not
help; 3 stages reach AP 1.9. The structure is kept as the zoo row's."""

_base_ = "retinanet_r18_fpn_synth.py"
model = dict(
    size_divisibility=128,
    neck=dict(_delete_=True, type="NASFPN", in_features=["c3", "c4", "c5"], out_channels=128, num_stages=7, norm="BN"),
    dense_head=dict(head=dict(norm="BN"), bg_iou=0.5),
)
data = dict(resize="mmdet", scale_ratio_range=(0.8, 1.2), crop_size=(128, 128), pad_size=(128, 128))
optim = dict(norm_weight_decay=0.0, warmup_factor=0.1)

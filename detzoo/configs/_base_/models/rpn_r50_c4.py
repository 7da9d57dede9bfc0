"""RPN R-50-C4: the res4 RPN of Faster R-CNN R-50-C4 alone (15 anchors, top-k
12000/2000 train, 6000/1000 test); output: 1000 proposals per image (AR@1000)."""

_base_ = "faster_rcnn_r50_c4.py"
model = dict(dense_head=dict(post_nms_topk_test=1000), roi_heads=None)

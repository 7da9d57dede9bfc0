"""RPN R-50-FPN: the RPN of Faster R-CNN R-50-FPN alone (no RoI heads); its test
proposals (1000 per image, scored by objectness) are the output, evaluated as AR@1000."""

_base_ = "faster_rcnn_r50_fpn.py"
model = dict(dense_head=dict(post_nms_topk_test=1000), roi_heads=None)

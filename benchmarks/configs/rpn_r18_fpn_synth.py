"""The demo's R-18-FPN as an RPN only (proposal recall), 300 proposals per image."""

_base_ = "zoo://faster_rcnn_r18_fpn_synth"
model = dict(roi_heads=None, dense_head=dict(post_nms_topk_test=300))

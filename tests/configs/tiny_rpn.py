"""tiny_faster_rcnn.py as an RPN only (no RoI heads): the proposals are the output."""

_base_ = "tiny_faster_rcnn.py"
model = dict(roi_heads=None, dense_head=dict(post_nms_topk_test=100))

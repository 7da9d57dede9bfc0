"""tiny_faster_rcnn.py as Fast R-CNN: no RPN, proposals read from the data's proposals
files (set by the tests), at most 100 per image."""

_base_ = "tiny_faster_rcnn.py"
model = dict(dense_head=None)
data = dict(
    train=dict(proposals_file="set_by_the_test.npz"),
    val=dict(proposals_file="set_by_the_test.npz"),
    proposals_topk_train=100,
    proposals_topk_test=100,
)

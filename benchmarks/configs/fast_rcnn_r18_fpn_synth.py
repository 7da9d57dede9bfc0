"""The demo's R-18-FPN as Fast R-CNN on the proposals of rpn_r18_fpn_synth (files set by
benchmarks/families_synthetic.py)."""

_base_ = "zoo://faster_rcnn_r18_fpn_synth"
model = dict(dense_head=None)
data = dict(
    train=dict(proposals_file="set_by_the_benchmark.npz"),
    val=dict(proposals_file="set_by_the_benchmark.npz"),
    proposals_topk_train=300,
    proposals_topk_test=300,
)

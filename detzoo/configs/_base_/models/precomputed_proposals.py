"""Fast R-CNN from precomputed proposals: no RPN; the RoI heads train and test on the
proposals of ``data.<split>.proposals_file`` (the best ``data.proposals_topk_train`` =
2000 per training image, ``proposals_topk_test`` = 1000 per test image, as Detectron).
Put it after the end-to-end model base in ``_base_``."""

model = dict(dense_head=None)

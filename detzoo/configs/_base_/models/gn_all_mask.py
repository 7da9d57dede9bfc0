"""``gn_all.py`` plus GroupNorm in the mask head's four convs."""

_base_ = "gn_all.py"
model = dict(roi_heads=dict(mask=dict(head=dict(norm="GN"))))

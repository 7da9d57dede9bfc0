"""``gn_ws_all.py`` plus GroupNorm and weight standardisation in the mask head's convs."""

_base_ = ["gn_ws_all.py", "gn_all_mask.py"]
model = dict(roi_heads=dict(mask=dict(head=dict(conv_ws=True))))

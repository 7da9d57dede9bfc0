"""``gn_ws_all.py`` plus GroupNorm and weight standardisation in the mask head's convs."""

_base_ = ["gn_all_mask.py", "gn_ws_all.py"]
model = dict(roi_heads=dict(mask=dict(head=dict(conv_ws=True))))

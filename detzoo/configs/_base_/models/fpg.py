"""The FPG neck of the two-stage crop640 rows (mmdetection's ``*_fpg_crop640-50e``): 9
bottom-up stages over C2-C5, P6 by max-pool of the top lateral, SyncBN with gradients in
the grid; batch padded to /64 so that the levels halve exactly. Put it after the model
base in ``_base_``."""

model = dict(
    size_divisibility=64,
    neck=dict(
        _delete_=True,
        type="FPG",
        in_features=["c2", "c3", "c4", "c5"],
        out_channels=256,
        num_stages=9,
        norm="SyncBN",
    ),
)

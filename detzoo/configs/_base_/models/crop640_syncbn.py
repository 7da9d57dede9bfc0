"""Norms of the crop640 recipe (NAS-FPN, FPG): BN with gradients in the backbone, its
statistics updated (stem and res2 frozen), synchronised across processes under
torch.distributed (SyncBN is plain BN in a single process). Necks and heads set their own
``norm="SyncBN"``. Put it after the model base in ``_base_``."""

model = dict(backbone=dict(norm="SyncBN", frozen_stages=2, norm_eval=False))

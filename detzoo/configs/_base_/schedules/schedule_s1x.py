"""s1x ("stretched 1x", Detectron): 130k iterations at batch 16, lr x0.1 at 100k and 120k;
iterations scale inversely with the actual batch (and the lr linearly with it)."""

_base_ = "schedule_1x.py"
schedule = "s1x"

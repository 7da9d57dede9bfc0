"""2x: 24 epochs, lr x0.1 at epochs 16 and 22."""

_base_ = "schedule_1x.py"
schedule = "2x"

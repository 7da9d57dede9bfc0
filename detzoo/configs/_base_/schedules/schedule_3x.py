"""3x: 36 epochs, lr x0.1 at epochs 28 and 34."""

_base_ = "schedule_1x.py"
schedule = "3x"

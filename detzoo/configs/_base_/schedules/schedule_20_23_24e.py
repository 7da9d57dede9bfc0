"""20-23-24e (the GN+WS paper's schedule): 24 epochs, lr x0.1 at epochs 20 and 23."""

_base_ = "schedule_1x.py"
schedule = "20_23_24e"

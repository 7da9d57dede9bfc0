"""detzoo: object detection toolbox and model zoo in pure PyTorch/torchvision."""

__version__ = "0.1.0"

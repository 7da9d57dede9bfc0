"""detzoo: object detection toolbox and model zoo in pure PyTorch/torchvision."""

from detzoo.api import load_model
from detzoo.version import __version__

__all__ = ["__version__", "load_model"]

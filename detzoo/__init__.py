"""detzoo: object detection toolbox and model zoo in pure PyTorch/torchvision."""

__version__ = "0.1.0"

from detzoo.api import load_model  # noqa: E402  (after __version__, which the engine reads)

__all__ = ["__version__", "load_model"]

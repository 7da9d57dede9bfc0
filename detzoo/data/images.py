"""Reading image files into RGB pixels, the one way training, testing, ``detzoo infer`` and
the API read images (``docs/data_rules.md``).

Images are read in their stored pixel frame (EXIF orientation not applied), 16-bit images
scaled to 8 bit, grayscale / palette / CMYK converted to RGB and alpha dropped. A missing
file is a ``MissingFileError``, an undecodable one (or one over twice Pillow's
decompression-bomb limit) a ``DataError``, both naming the file. Warnings go to the
``detzoo.data`` logger.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from detzoo.errors import DataError, MissingFileError
from detzoo.structures import Size

logger = logging.getLogger("detzoo.data")

_EXIF_ORIENTATION = 0x0112
_EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations that turn the image by 90 degrees when displayed
_WARNED: set[str] = set()  # square images with such an orientation, warned about in this process


def rgb_array(image: Image.Image, *, source: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image in its stored pixel frame (EXIF orientation not
    applied): 16-bit images scaled to 8 bit (v / 257, so 65535 is 255, as OpenCV's color
    read), grayscale / palette / CMYK converted by Pillow, alpha dropped. 32-bit integer
    or float images are a ``DataError`` naming ``source``."""
    if image.mode.startswith("I;16"):
        gray = np.rint(np.asarray(image, dtype=np.float32) / 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):
        raise DataError(f"image {source} has 32-bit pixels (mode {image.mode}); save it with 8 or 16 bits per channel")
    return np.asarray(image.convert("RGB"))


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """``rgb_array`` of an image file and its EXIF orientation tag (1 if none)."""
    if not path.is_file():
        raise MissingFileError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            # over MAX_IMAGE_PIXELS Pillow warns without naming the file; it is logged below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} was refused as a possible decompression bomb: {e}") from e
    except Exception as e:  # Pillow raises many types for a corrupt or truncated file; all mean the same here
        detail = str(e).replace(f" {str(path)!r}", "")  # Pillow's message may repeat the path
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {detail}") from e
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.width * im.height > limit:
        logger.warning("image %s has %d x %d pixels, over Pillow's decompression-bomb limit of %d (read anyway; "
                       "refused above twice that)", path, im.width, im.height, limit)
    return rgb_array(im, source=path), im.getexif().get(_EXIF_ORIENTATION, 1)


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file by ``rgb_array``'s rules; a missing file
    is a ``MissingFileError``, an undecodable one (or one over twice Pillow's
    decompression-bomb limit) a ``DataError``, both naming it."""
    return _decode(Path(path))[0]


def read_image(path: Path, size: Size | None = None) -> Tensor:
    """(3, H, W) float32 RGB 0-255 by ``read_rgb``'s rules; when ``size`` (h, w) is given,
    another size on disk is a ``DataError`` naming the file (and its EXIF orientation
    when that explains the difference), and a square image whose EXIF orientation turns it
    by 90 degrees, which no size check can catch, is a warning (once per file and process)."""
    rgb, orientation = _decode(Path(path))
    if size is not None and orientation in _EXIF_TRANSPOSED and size[0] == size[1] and str(path) not in _WARNED:
        _WARNED.add(str(path))
        logger.warning("image %s is square and its EXIF orientation (%d) turns it by 90 degrees when displayed; "
                       "detzoo reads the stored pixels, the frame of COCO's annotations (docs/data_rules.md): if its "
                       "annotations are in the displayed frame, store it turned (PIL.ImageOps.exif_transpose)",
                       path, orientation)
    if size is not None and rgb.shape[:2] != tuple(size):
        exif = ""
        if orientation in _EXIF_TRANSPOSED and rgb.shape[1::-1] == tuple(size):
            exif = (f"; its EXIF orientation ({orientation}) turns it by 90 degrees when displayed, but detzoo reads "
                    "the stored pixels, the frame of COCO's annotations (docs/data_rules.md): store the image "
                    "turned (PIL.ImageOps.exif_transpose) if the annotations are in the displayed frame")
        raise DataError(
            f"image {path} is {rgb.shape[1]}x{rgb.shape[0]} (w x h) on disk "
            f"but {size[1]}x{size[0]} in the annotation file{exif}"
        )
    return rgb_tensor(rgb)


def rgb_tensor(rgb: np.ndarray) -> Tensor:
    """(3, H, W) float32 0-255 of (H, W, 3) uint8 RGB pixels."""
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1).contiguous()

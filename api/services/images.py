"""Image files (PNG, JPEG) as a classifier's input, prepared the way its dataset was.

Checked before any pixel is decoded: the format (PNG or JPEG only, from the file's bytes, not
its name) and the pixel count the header declares, so a decompression bomb (a small file that
claims a huge image) is refused without allocating it.

Preparation, to (C, H, W) float32 in [0, 1]:
- channels: grey ("L") for one-channel models, RGB for three; transparency is flattened
  onto the image's background;
- ink datasets (digits, MNIST, Fashion-MNIST) are light strokes on a dark ground: a photo or
  scan with a light ground (the median of its border pixels above half) is inverted, so a
  digit written in pen on paper reads as one written in light on dark;
- the image is padded to a square with its background colour (no stretching), then resized
  to H x W with a box filter: each output pixel is the mean of the pixels it covers, which is
  how scikit-learn's 8x8 digits were made from 32x32 bitmaps (and how MNIST was
  anti-aliased).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

FORMATS = ("PNG", "JPEG")


class ImageError(ValueError):
    """A file that cannot be used as an input: `field` names it (e.g. "files.0 (cat.png)")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Preparation:
    channels: int
    height: int
    width: int
    light_on_dark: bool  # the dataset's images are light ink on a dark ground
    max_pixels: int


def prepare_image(data: bytes, how: Preparation, field: str) -> np.ndarray:
    """One image file -> (C, H, W) float32 in [0, 1]; ImageError naming `field` otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(field, "is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(field, "is not a PNG or JPEG image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(field, f"cannot be read as an image ({exc})") from None
    width, height = image.size
    if width * height > how.max_pixels:
        raise ImageError(field, f"is {width} x {height} pixels; at most {how.max_pixels:,} "
                         "pixels (TRAINYARD_MAX_IMAGE_PIXELS)")
    try:
        image.load()
        pixels = _channels(image, how.channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(field, f"is damaged and does not decode ({exc})") from None
    ground = _ground(pixels)
    if how.light_on_dark and float(ground.mean()) > 0.5:
        pixels, ground = 1.0 - pixels, 1.0 - ground
    pixels = _pad_square(pixels, ground)
    return _resize(pixels, how.height, how.width)


def _channels(image, channels: int) -> np.ndarray:
    """(H, W, channels) float32 in [0, 1]. Transparency is composited onto white: a drawing
    on nothing reads as ink on paper (and an ink dataset then inverts it)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and
                                               "transparency" in image.info):
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(backdrop, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[:, :, None] if array.ndim == 2 else array


def _ground(pixels: np.ndarray) -> np.ndarray:
    """The image's ground colour (per channel): the median of its outermost rows and columns,
    which a stroke touching the edge does not move."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0).astype(np.float32)


def _pad_square(pixels: np.ndarray, ground: np.ndarray) -> np.ndarray:
    h, w, c = pixels.shape
    side = max(h, w)
    if h == w:
        return pixels
    out = np.empty((side, side, c), dtype=np.float32)
    out[:] = ground
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = pixels
    return out


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(S, S, C) -> (C, height, width), each channel resized as a float image ("F" mode keeps
    the values exact: no rounding to 8 bits after inversion or padding)."""
    from PIL import Image

    h, w, _ = pixels.shape
    shrink = h >= height and w >= width
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    planes = []
    for c in range(pixels.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(pixels[:, :, c]))  # float32: mode "F"
        if (h, w) != (height, width):
            plane = plane.resize((width, height), method)
        planes.append(np.asarray(plane, dtype=np.float32))
    return np.clip(np.stack(planes), 0.0, 1.0)

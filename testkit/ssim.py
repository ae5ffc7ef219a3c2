"""SSIM (Wang et al. 2004) on luma, in numpy: independent of libvips, for the
quality benchmark and the tests that compare outputs with ImageMagick's.

Gaussian window sigma 1.5 (11 taps), K1 0.01, K2 0.03, luma by Rec. 601
weights: the usual settings of the published measure. Both images are decoded
by Pillow and flattened onto white, so transparency counts as it looks on a
white page.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

_SIGMA = 1.5
_RADIUS = 5
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2

Plane = NDArray[np.float64]


def luma(data: bytes | Image.Image) -> Plane:
    """The luma plane (0-255) of an encoded image, flattened onto white."""
    image = Image.open(io.BytesIO(data)) if isinstance(data, bytes) else data
    image.load()
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.float64)
    weights: Plane = np.array([0.299, 0.587, 0.114])
    plane: Plane = rgb @ weights
    return plane


def _blur(plane: Plane) -> Plane:
    taps = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * _SIGMA**2))
    kernel /= kernel.sum()
    # Valid region only: no padding at the borders.
    rows = np.apply_along_axis(np.convolve, 1, plane, kernel, mode="valid")
    blurred: Plane = np.apply_along_axis(np.convolve, 0, rows, kernel, mode="valid")
    return blurred


def ssim(a: bytes | Image.Image, b: bytes | Image.Image) -> float:
    """Mean SSIM of two images of the same size (1.0: identical)."""
    x, y = luma(a), luma(b)
    if x.shape != y.shape:
        raise ValueError(f"sizes differ: {x.shape[::-1]} and {y.shape[::-1]}")
    mu_x, mu_y = _blur(x), _blur(y)
    var_x = _blur(x * x) - mu_x**2
    var_y = _blur(y * y) - mu_y**2
    cov = _blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return float(np.mean(numerator / denominator))

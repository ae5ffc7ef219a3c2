"""Every table of image formats, in one leaf module (it imports nothing of ours).

Outputs are named by extension (jpg, png, webp, gif, avif); originals by the
names of `allowed_source_formats` (jpeg, png, ... pdf), each read by one libvips
loader.
"""

from __future__ import annotations

# Outputs.
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
}
EXTENSION_ALIASES = {"jpeg": "jpg"}  # another spelling of an output's extension
LOSSLESS_FORMATS = frozenset({"png", "gif"})  # quality means nothing to them
FORMATS_WITH_ALPHA = frozenset({"png", "webp", "avif", "gif"})  # -pad is transparent in these
NEGOTIABLE_FORMATS = frozenset({"webp", "avif"})  # what auto_formats may serve a jpg request in
ANIMATED_FORMATS = frozenset({"gif", "webp"})  # outputs that keep an original's frames
TARGETED_FORMATS = frozenset({"jpg", "webp"})  # quality_target: avif encodes cost too much
# Measured in docs/security.md: about 4 s of encoding at most for each (AVIF ~1 s/MP
# on a detailed photo, WebP ~0.2 s/MP, PNG and JPEG far less).
DEFAULT_MAX_OUTPUT_PIXELS = {
    "jpg": 50_000_000,
    "png": 16_000_000,
    "webp": 16_000_000,
    "gif": 16_000_000,
    "avif": 4_000_000,
}

# Originals: allowed_source_formats names -> the libvips loader that reads each.
LOADERS = {
    "jpeg": "jpegload_buffer",
    "png": "pngload_buffer",
    "webp": "webpload_buffer",
    "gif": "gifload_buffer",
    "heif": "heifload_buffer",
    "tiff": "tiffload_buffer",
    "svg": "svgload_buffer",
    "pdf": "pdfload_buffer",
}
SOURCE_FORMATS = frozenset(LOADERS)

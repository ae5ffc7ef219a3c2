"""Colour: every output is 8-bit sRGB (or grey), from any profile or space."""

from __future__ import annotations

import pyvips


def foreign_profile(image: pyvips.Image) -> bool:
    """True when the image carries an ICC profile other than sRGB IEC61966-2.1.

    Most photographs embed that very profile: their pixels are sRGB already, and
    transforming them through it costs a third of a resize (lcms builds the
    transform each time) for nothing. The ICC header names it: device
    manufacturer "IEC ", model "sRGB" (bytes 48-55).
    """
    if image.get_typeof("icc-profile-data") == 0:
        return False
    profile = image.get("icc-profile-data")
    return bytes(profile[48:56]) != b"IEC sRGB"


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    if image.interpretation == "cmyk" or foreign_profile(image):
        image = image.icc_transform("srgb", embedded=True, intent="perceptual")
    if image.interpretation in ("b-w", "grey16"):
        target = "b-w"
    else:
        target = "srgb"
    if image.interpretation != target or image.format != "uchar":
        image = image.colourspace(target)
    return image.cast("uchar") if image.format != "uchar" else image

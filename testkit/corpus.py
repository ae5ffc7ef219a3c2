"""The benchmark corpus: Debian's wallpaper packages, or a directory given on the command line."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pyvips

PACKAGES = ["plasma-workspace-wallpapers", "gnome-backgrounds"]
# The images of ../shared/corpus, by their path inside the packages.
SELECTION = {
    "Autumn.jpg": "usr/share/wallpapers/Autumn/contents/images/2560x1600.jpg",
    "BytheWater.jpg": "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg",
    "ColdRipple.jpg": "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg",
    "ColorfulCups.jpg": "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg",
    "DarkestHour.jpg": "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg",
    "EveningGlow.jpg": "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg",
    "FallenLeaf.jpg": "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg",
    "Grey.jpg": "usr/share/wallpapers/Grey/contents/images/2560x1600.jpg",
    "Honeywave-5k.jpg": "usr/share/wallpapers/Honeywave/contents/images/5120x2880.jpg",
    "Kite.jpg": "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg",
    "OneStandsOut.jpg": "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg",
    "Path.jpg": "usr/share/wallpapers/Path/contents/images/2560x1600.jpg",
    "summer_1am.jpg": "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg",
    "Cascade.png": "usr/share/wallpapers/Cascade/contents/images/3840x2160.png",
    "Elarun-rgba.png": "usr/share/wallpapers/Elarun/contents/images/2560x1600.png",
    "truchet.webp": "usr/share/backgrounds/gnome/truchet-d.webp",
    "wood.webp": "usr/share/backgrounds/gnome/wood-l.webp",
}


@dataclasses.dataclass(frozen=True)
class Original:
    name: str
    path: Path
    loader: str  # jpegload, pngload, webpload
    width: int
    height: int
    progressive: bool
    size_bytes: int

    @property
    def kind(self) -> str:
        kind = self.loader.removesuffix("load")
        if kind == "jpeg":
            kind += " progressive" if self.progressive else " baseline"
        return kind


def fetch_debian(cache: Path) -> Path:
    """Download the wallpaper packages and extract the selection; returns its directory."""
    target = cache / "corpus"
    if all((target / name).exists() for name in SELECTION):
        return target
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", *PACKAGES]
    if subprocess.run(download, cwd=debs, capture_output=True).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(download, cwd=debs, check=True, capture_output=True)
    extracted = cache / "extracted"
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(extracted)], check=True)
    target.mkdir(parents=True, exist_ok=True)
    for name, inside in SELECTION.items():
        shutil.copyfile(extracted / inside, target / name)
    shutil.rmtree(extracted)
    return target


def describe(directory: Path) -> list[Original]:
    originals = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
            continue
        header = pyvips.Image.new_from_file(str(path), access="sequential")
        loader = str(header.get("vips-loader"))
        progressive = loader == "jpegload" and _is_progressive(path.read_bytes())
        originals.append(
            Original(
                path.name,
                path,
                loader,
                header.width,
                header.height,
                progressive,
                path.stat().st_size,
            )
        )
    return originals


def _is_progressive(data: bytes) -> bool:
    """A JPEG is progressive when its frame header is SOF2 (FFC2) rather than SOF0/1."""
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return False
        marker = data[index + 1]
        if marker in (0xC0, 0xC1):
            return False
        if marker == 0xC2:
            return True
        index += 2 + int.from_bytes(data[index + 2 : index + 4], "big")
    return False

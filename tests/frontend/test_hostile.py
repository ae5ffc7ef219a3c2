"""A hostile corpus, generated here, through the whole pipeline."""

from __future__ import annotations

import io
import itertools
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import PIL.Image
import pytest

from tests.support.images import (
    animated_gif,
    decode,
    jpeg_bomb,
    mean_abs_difference,
    photo,
    png_bomb,
    quadrants,
    solid,
)
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until

_ids = itertools.count(1)
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500">'
    b'<rect width="9" height="9"/></svg>'
)


def cmyk_jpeg() -> bytes:
    import pyvips

    cmyk = (pyvips.Image.black(64, 64, bands=4) + [0, 255, 255, 0]).cast("uchar")
    return bytes(cmyk.copy(interpretation="cmyk").jpegsave_buffer())


def png16() -> bytes:
    import pyvips

    rgb16 = (pyvips.Image.black(64, 64, bands=3) + [40000, 20000, 1000]).cast("ushort")
    return bytes(rgb16.copy(interpretation="rgb16").pngsave_buffer())


CORPUS: dict[str, tuple[Callable[[], bytes], int]] = {
    "zero-bytes": (lambda: b"", 415),
    "truncated-jpeg": (lambda: photo()[: len(photo()) // 3], 415),
    "truncated-png": (lambda: solid(300, 300, (1, 2, 3))[:200], 415),
    "random-bytes": (lambda: bytes(range(256)) * 40, 415),
    "html": (lambda: b"<!doctype html><html><body>Not found, sorry!</body></html>", 415),
    "svg": (lambda: SVG, 415),
    "png-60000x60000": (lambda: png_bomb(60000, 60000), 413),
    "jpeg-60000x60000": (lambda: jpeg_bomb(60000, 60000), 413),
    "gif-200-frames": (lambda: animated_gif(200), 200),
    "cmyk-jpeg": (cmyk_jpeg, 200),
    "png-16-bit": (png16, 200),
}


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Stack]:
    from tests.support.rabbitmq import Vhost

    vhost = Vhost()
    stack = Stack(tmp_path_factory.mktemp("hostile"), vhost, origin)
    try:
        yield stack.start(processors=2)
    finally:
        stack.stop()
        vhost.delete()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_hostile_original_gets_its_documented_status(
    hostile_stack: Stack, origin: Origin, name: str
) -> None:
    make, status = CORPUS[name]
    image_id = next(_ids)
    origin.add(f"hostile/{name}/{image_id}/original.jpg", make())
    response = hostile_stack.get(f"/hostile/{name}/{image_id}/w200.jpg")
    assert response.status == status, response.data
    assert b"Traceback" not in response.data
    if status == 200:
        image = decode(response.data)
        assert image.width <= 200 and image.bands == 3 and image.format == "uchar"
    assert all(hostile_stack.alive().values())


def test_decompression_bombs_allocate_nothing_large(hostile_stack: Stack, origin: Origin) -> None:
    pids = [p.pid for name, p in hostile_stack.processes.items() if name.startswith("processor")]
    for pid in pids:  # these processors met bombs before: their peak starts again from now
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = [peak_rss_kib(pid) for pid in pids]
    for index, bomb in enumerate([png_bomb(60000, 60000), jpeg_bomb(60000, 60000)] * 3):
        origin.add(f"hostile/bomb/{index}/original.jpg", bomb)
        assert hostile_stack.get(f"/hostile/bomb/{index}/full_size.jpg").status == 413
    growth_mib = [(peak_rss_kib(pid) - old) / 1024 for pid, old in zip(pids, before, strict=True)]
    # 60000x60000 RGB would be 10 GiB; the header check refuses before any pixel.
    assert max(growth_mib) < 64, growth_mib


# Where the top-left quadrant (red | green over blue | white) ends up once the
# EXIF orientation is applied, and whether width and height swap.
ORIENTATIONS = {
    1: ((255, 0, 0), False),
    2: ((0, 255, 0), False),
    3: ((255, 255, 255), False),
    4: ((0, 0, 255), False),
    5: ((255, 0, 0), True),
    6: ((0, 0, 255), True),
    7: ((255, 255, 255), True),
    8: ((0, 255, 0), True),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientations_are_applied(
    hostile_stack: Stack, origin: Origin, orientation: int
) -> None:
    colour, swapped = ORIENTATIONS[orientation]
    origin.add(f"hostile/exif/{orientation}/original.jpg", quadrants(orientation))
    for output in ("w100.png", "full_size.png"):
        response = hostile_stack.get(f"/hostile/exif/{orientation}/{output}")
        assert response.status == 200
        image = decode(response.data)
        assert (image.height > image.width) is swapped, output
        corner = image.crop(2, 2, 8, 8).stats()
        means = [corner(4, band + 1)[0] for band in range(3)]
        assert all(abs(m - c) < 40 for m, c in zip(means, colour, strict=True)), (output, means)


def test_an_animated_original_gives_its_first_frame_only(
    hostile_stack: Stack, origin: Origin
) -> None:
    """A tall strip of every frame would also be at most 200 wide: check it is one frame."""
    gif = animated_gif(200)
    image_id = next(_ids)
    origin.add(f"hostile/frames/{image_id}/original.jpg", gif)
    response = hostile_stack.get(f"/hostile/frames/{image_id}/w200.png")
    assert response.status == 200
    ours = decode(response.data)
    assert (ours.width, ours.height) == (64, 64)  # one 64x64 frame, never upscaled
    with PIL.Image.open(io.BytesIO(gif)) as opened:  # Pillow reads the first frame
        first = opened.convert("RGB")
        buffer = io.BytesIO()
        first.save(buffer, "PNG")
    # A black and white GIF may come back one band; Pillow's PNG may carry a tRNS alpha.
    reference = decode(buffer.getvalue())[:3]
    assert mean_abs_difference(ours.colourspace("srgb")[:3], reference) < 1


def test_a_request_tornado_refuses_itself_is_logged_and_counted(stack: Stack) -> None:
    """A malformed request line gets Tornado's own 400, before any handler: it
    still leaves a request line (and is counted)."""
    with socket.create_connection(("127.0.0.1", stack.config["server_port"])) as client:
        client.sendall(b"NOT A REQUEST LINE AT ALL\r\n\r\n")
        client.settimeout(10)
        assert client.recv(100).startswith(b"HTTP/1.1 400")

    def logged() -> bool:
        lines = [
            json.loads(line) for index in range(2) for line in stack.access_log(index).splitlines()
        ]
        return any(
            line["status"] == 400 and "malformed request" in line.get("error", "") for line in lines
        )

    wait_until(logged, what="the request line of the malformed request")

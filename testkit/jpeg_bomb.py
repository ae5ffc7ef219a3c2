"""A legal progressive JPEG that costs far more to decode than its size says.

One DC scan, then for each component and each AC coefficient one first scan
(successive approximation bit 13) and 13 refinement scans down to bit 0: 2,647
scans of a flat picture (hardening issue: 533 KB at 7000x7000 held a processor
for 36 s). Built from the scans libvips writes for a flat picture: every AC
coefficient is zero, so each scan's entropy-coded data is the same run of
end-of-bands whatever its coefficient and bit; only its SOS header changes.
"""

from __future__ import annotations

import struct

import pyvips

_SOI, _SOS, _EOI = 0xD8, 0xDA, 0xD9
_TOP_BIT = 13  # the highest successive-approximation bit of 8-bit samples


def scan_bomb(side: int) -> bytes:
    """A `side` x `side` progressive JPEG of 1 + 3 x 63 x 14 scans."""
    flat = pyvips.Image.black(side, side, bands=3).new_from_image([128, 100, 90]).cast("uchar")
    flat = flat.copy(interpretation="srgb")
    plain = flat.jpegsave_buffer(Q=90, interlace=True, subsample_mode="off", keep=0)
    head, scans = _split(plain)
    dc = [scan for scan in scans if scan.spectral == (0, 0)]
    ac = [scan for scan in scans if scan.spectral != (0, 0)]
    out = [head, *(scan.data for scan in dc)]
    for component in range(3):
        first = next(s for s in ac if s.component == component and s.high == 0)
        refine = next(s for s in ac if s.component == component and s.high > 0)
        for k in range(1, 64):
            out.append(first.with_band(k, 0, _TOP_BIT))
            out.extend(refine.with_band(k, bit + 1, bit) for bit in range(_TOP_BIT - 1, -1, -1))
    out.append(bytes([0xFF, _EOI]))
    return b"".join(out)


class _Scan:
    """One scan as written: the tables before its SOS, the SOS and its data."""

    def __init__(self, tables: bytes, sos: bytes, data: bytes) -> None:
        self.tables, self.sos, self.data_only = tables, sos, data
        count = sos[4]
        self.component = sos[5] - 1 if count == 1 else -1
        spectral = 5 + 2 * count
        self.spectral = (sos[spectral], sos[spectral + 1])
        self.high = sos[spectral + 2] >> 4

    @property
    def data(self) -> bytes:
        return self.tables + self.sos + self.data_only

    def with_band(self, k: int, high: int, low: int) -> bytes:
        sos = bytearray(self.sos)
        sos[-3:] = bytes([k, k, (high << 4) | low])
        return self.tables + bytes(sos) + self.data_only


def _split(jpeg: bytes) -> tuple[bytes, list[_Scan]]:
    """The header (up to the first scan's tables) and the scans of `jpeg`."""
    pos, head_end, tables_start = 2, None, 2
    scans = []
    while pos < len(jpeg):
        marker = jpeg[pos + 1]
        if marker == _EOI:
            break
        (length,) = struct.unpack_from(">H", jpeg, pos + 2)
        segment_end = pos + 2 + length
        if marker != _SOS:
            if marker == 0xC4 and head_end is None:  # the first table of the first scan
                head_end = tables_start = pos
            pos = segment_end
            continue
        data_end = segment_end
        while not (jpeg[data_end] == 0xFF and jpeg[data_end + 1] not in (0x00, *range(0xD0, 0xD8))):
            data_end += 1
        tables = jpeg[tables_start:pos]
        scans.append(_Scan(tables, jpeg[pos:segment_end], jpeg[segment_end:data_end]))
        pos = tables_start = data_end
    assert head_end is not None
    return jpeg[:head_end], scans

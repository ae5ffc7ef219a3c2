"""The frontends' request log file: JSON lines, written in batches, rotated by size."""

from __future__ import annotations

import json
from pathlib import Path

from frontend.accounting import AccessLog


class SmallAccessLog(AccessLog):
    MAX_BYTES = 2_000
    BACKUPS = 3


def test_lines_are_json_and_the_file_rotates_keeping_its_backups(tmp_path: Path) -> None:
    log = SmallAccessLog(tmp_path / "access_frontend_0.log")
    for index in range(200):
        log.add(f"GET /a/b/{index}/w1.jpg 200", {"event": "request", "status": 200})
        if index % 10 == 9:
            log.flush()
    log.close()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [
        "access_frontend_0.log",
        "access_frontend_0.log.1",
        "access_frontend_0.log.2",
        "access_frontend_0.log.3",
    ]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= SmallAccessLog.MAX_BYTES + 2_000  # one batch past it
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert all(line["event"] == "request" and line["logger"] == "access" for line in lines)
    # The last line is in the file, or in .1 when its batch made the file rotate.
    current, previous = (tmp_path / "access_frontend_0.log", tmp_path / "access_frontend_0.log.1")
    newest = (current.read_text() or previous.read_text()).splitlines()
    assert json.loads(newest[-1])["msg"] == "GET /a/b/199/w1.jpg 200"

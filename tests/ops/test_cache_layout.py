"""An output cache of the flat layout moves to the partitioned one (ops/cache_layout.py)."""

from __future__ import annotations

from pathlib import Path

from common import keys
from common.file_index import INDEX_NAME, FileIndex
from ops.cache_layout import migrate

TAG = "src-" + "b" * 24


def test_flat_image_directories_move_under_their_partitions(tmp_path: Path) -> None:
    flat = {
        "m/t/1/w100.jpg": b"one",
        f"m/t/1/{TAG}/x50.jpg": b"sourced",
        "m/t/abc/w100.jpg": b"an id like a partition",
        "m/t/2/w100.jpg": b"older",
        "m/t/2/w200.jpg": b"two",
    }
    for relative, data in flat.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
    newer = keys.OutputRef.from_cache_key("m/t/2/w100.jpg").path_under(tmp_path)
    newer.parent.mkdir(parents=True)
    newer.write_bytes(b"newer")  # written by the new version before the move
    FileIndex(tmp_path).added(newer, 5)
    assert migrate(tmp_path) == 3
    for relative, data in flat.items():
        path = keys.OutputRef.from_cache_key(relative).path_under(tmp_path)
        assert path.read_bytes() == (b"newer" if relative == "m/t/2/w100.jpg" else data)
    assert not any((tmp_path / "m/t" / image).exists() for image in ("1", "abc", "2"))
    assert not (tmp_path / INDEX_NAME).exists()  # the janitor rebuilds it under the new names
    assert migrate(tmp_path) == 0  # the partitioned layout is left as it is
    (tmp_path / "m/t/9").mkdir()
    (tmp_path / "m/t/9/w100.jpg").write_bytes(b"flat")
    assert migrate(tmp_path) == 0  # once looked at whole, never walked again

"""An output cache of an earlier layout moves to the current one (ops/cache_layout.py)."""

from __future__ import annotations

from pathlib import Path

from common import keys
from common.file_index import INDEX_NAME, FileIndex
from ops.cache_layout import migrate

TAG = "src-" + "b" * 24


def _write(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)


def _cached(root: Path, cache_key: str) -> Path:
    return keys.OutputRef.from_cache_key(cache_key).path_under(root)


def test_image_directories_of_both_earlier_layouts_become_files_of_their_partitions(
    tmp_path: Path,
) -> None:
    part3 = keys.partition("3")
    first = {  # <model>/<imageType>/<id>/
        "m/t/1/w100.jpg": b"one",
        f"m/t/1/{TAG}/x50.jpg": b"sourced",
        "m/t/abc/w100.jpg": b"an id like a partition",
        "m/t/2/w100.jpg": b"older",
        "m/t/2/w200.jpg": b"two",
    }
    second = {  # <model>/<imageType>/<partition>/<id>/
        f"m/t/{part3}/3/w100.jpg": b"three",
        f"m/t/{part3}/3/{TAG}/x50.jpg": b"three sourced",
    }
    _write(tmp_path, first | second)
    newer = _cached(tmp_path, "m/t/2/w100.jpg")
    newer.parent.mkdir(parents=True, exist_ok=True)
    newer.write_bytes(b"newer")  # written by the new version before the move
    current = _cached(tmp_path, "m/t/4/w100.jpg")
    current.parent.mkdir(parents=True, exist_ok=True)
    current.write_bytes(b"current")
    # The first layout's image "abc" is also the current layout's partition "abc":
    # an image of that partition written there by the new version stays as it is.
    of_abc = next(str(n) for n in range(100_000) if keys.partition(str(n)) == "abc")
    sharing = _cached(tmp_path, f"m/t/{of_abc}/w100.jpg")
    sharing.write_bytes(b"current, in an old image's directory")
    foreign = tmp_path / f"m/t/{part3}/notes/todo.txt"  # not an image of partition part3
    _write(tmp_path, {foreign.relative_to(tmp_path).as_posix(): b"not ours"})
    FileIndex(tmp_path).added(newer, 5)

    assert migrate(tmp_path) == 4
    assert _cached(tmp_path, "m/t/1/w100.jpg").read_bytes() == b"one"
    assert _cached(tmp_path, f"m/t/1/{TAG}/x50.jpg").read_bytes() == b"sourced"
    assert _cached(tmp_path, "m/t/abc/w100.jpg").read_bytes() == b"an id like a partition"
    assert _cached(tmp_path, "m/t/2/w100.jpg").read_bytes() == b"newer"
    assert _cached(tmp_path, "m/t/2/w200.jpg").read_bytes() == b"two"
    assert _cached(tmp_path, "m/t/3/w100.jpg").read_bytes() == b"three"
    assert _cached(tmp_path, f"m/t/3/{TAG}/x50.jpg").read_bytes() == b"three sourced"
    assert current.read_bytes() == b"current" and foreign.read_bytes() == b"not ours"
    assert sharing.read_bytes() == b"current, in an old image's directory"
    for image in ("1", "2", f"{part3}/3"):
        assert not (tmp_path / "m/t" / image).exists()
    assert not (tmp_path / INDEX_NAME).exists()  # the janitor rebuilds it under the new names
    assert migrate(tmp_path) == 0  # the current layout is left as it is
    _write(tmp_path, {"m/t/9/w100.jpg": b"first layout"})
    assert migrate(tmp_path) == 0  # once looked at whole, never walked again


def test_a_cache_of_the_current_layout_is_left_as_it_is(tmp_path: Path) -> None:
    paths = [_cached(tmp_path, f"m/t/{i}/w100.jpg") for i in range(20)]
    for path in paths:
        _write(tmp_path, {path.relative_to(tmp_path).as_posix(): b"x"})
    FileIndex(tmp_path).added(paths[0], 1)
    assert migrate(tmp_path) == 0
    assert all(path.exists() for path in paths) and (tmp_path / INDEX_NAME).exists()

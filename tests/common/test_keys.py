"""The key layout (common/keys.py): the one contract object storage keeps across deploys."""

from __future__ import annotations

import dataclasses
import hashlib
import string
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from common import config, keys
from common.keys import ImageRef, OutputRef


@dataclasses.dataclass(frozen=True)
class Layout:  # keys.KeyLayout: the three settings the layout depends on, and nothing else
    storage_key_prefix: str = "public/images/test"
    cache_dir: Path = Path("/var/cache/images")
    originals_dir: Path = Path("/var/originals")


SETTINGS = Layout()


def test_the_settings_give_the_same_layout() -> None:
    settings = config.from_mapping(
        {
            "source_domain": "http://origin.test/",
            "local_base_path": "/var/cache/images",
            "originals_path": "/var/originals",
            "storage_key_prefix": "public/images/test",
        }
    )
    output = ImageRef("user", "avatar", "3589782").output("w500.jpg")
    assert output.object_key(settings) == output.object_key(SETTINGS)
    assert output.cache_path(settings) == output.cache_path(SETTINGS)
    url = "http://origin.test/a.jpg"
    assert keys.master_path(settings, url) == keys.master_path(SETTINGS, url)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_layout_as_documented() -> None:
    """Pinned, string for string: a change here moves every stored object."""
    image = ImageRef("user", "avatar", "3589782")
    output = image.output("w500.jpg")
    part = sha("3589782")[:3]
    assert output.cache_key == "user/avatar/3589782/w500.jpg"
    assert output.object_key(SETTINGS) == f"public/images/test/user/avatar/{part}/3589782/w500.jpg"
    url = "http://origin.test/user/avatar/3589782/original.jpg"
    assert image.original_key(SETTINGS, url) == (
        f"public/images/test/user/avatar/{part}/3589782/original"
    )
    assert (
        str(output.cache_path(SETTINGS)) == f"/var/cache/images/user/avatar/{part}/3589782.w500.jpg"
    )
    assert image.cached_name_prefix == f"user/avatar/{part}/3589782."
    assert image.purge_mark_key(SETTINGS) == "public/images/test/.purged/user/avatar/3589782"
    assert str(keys.original_path(SETTINGS, url)) == f"/var/originals/{sha(url)[:2]}/{sha(url)}"
    assert str(keys.master_path(SETTINGS, url)) == (
        f"/var/originals/masters/{sha(url)[:2]}/{sha(url)}-2.v"
    )


def test_an_explicit_source_is_another_original_with_outputs_of_its_own() -> None:
    source = "https://cdn.example.com/x.jpg"
    image = ImageRef.of("a", "b", "1", source)
    tag = sha(source)[:24]
    output = image.output("x50.jpg")
    assert output.cache_key == f"a/b/1/src-{tag}/x50.jpg"
    assert (
        output.object_key(SETTINGS) == f"public/images/test/a/b/{sha('1')[:3]}/1/src-{tag}/x50.jpg"
    )
    assert image.original_key(SETTINGS, source) == f"public/images/test/.originals/{sha(source)}"
    assert str(output.cache_path(SETTINGS)) == (
        f"/var/cache/images/a/b/{sha('1')[:3]}/1.src-{tag}.x50.jpg"
    )


segment = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=20)
names = st.sampled_from(["w500.jpg", "x50.webp", "300x400-q60.jpg", "full_size.png"])
sources = st.none() | st.sampled_from(["https://a.example/x.jpg", "http://b.example/y?z=1"])


@settings(max_examples=200, derandomize=True)
@given(segment, segment, segment, names, sources)
def test_keys_parse_back_to_what_made_them(
    model: str, image_type: str, image_id: str, name: str, source: str | None
) -> None:
    output = ImageRef.of(model, image_type, image_id, source).output(name)
    assert OutputRef.from_cache_key(output.cache_key) == output
    cached = output.path_under(Path("/c")).relative_to("/c").as_posix()
    assert keys.cached_output(cached) == output
    assert cached.startswith(output.image.cached_name_prefix)
    parsed = keys.parse_object_key(SETTINGS, output.object_key(SETTINGS))
    assert parsed is not None
    image, rest = parsed
    assert (image.model, image.image_type, image.id) == (model, image_type, image_id)
    assert rest == output.image.source_part + name
    assert keys.parse_flat_object_key(SETTINGS, output.object_key(SETTINGS)) is None


def test_keys_of_the_flat_layout_are_recognised_and_others_are_not() -> None:
    head = "public/images/test"
    flat = keys.parse_flat_object_key(SETTINGS, f"{head}/old/img/1/w100.jpg")
    assert flat == ImageRef("old", "img", "1").output("w100.jpg")
    tagged = keys.parse_flat_object_key(SETTINGS, f"{head}/old/img/1/src-0123/w100.jpg")
    assert tagged == ImageRef("old", "img", "1", "0123").output("w100.jpg")
    mark = ImageRef("old", "img", "1").purge_mark_key(SETTINGS)
    for other in (f"{head}/.originals/{sha('x')}", "elsewhere/old/img/1/w100.jpg", mark):
        assert keys.parse_flat_object_key(SETTINGS, other) is None
        assert keys.parse_object_key(SETTINGS, other) is None

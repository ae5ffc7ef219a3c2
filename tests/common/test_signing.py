from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import BadSignature
from common.signing import (
    pregenerate_message,
    purge_message,
    signature,
    signed_url,
    verify,
)
from ops import sign
from tests.support import REPO
from tests.support.images import decode, photo
from tests.support.origin import Origin
from tests.support.stack import Stack

OLD, NEW = "old-secret-key-of-the-signing-tests", "new-secret-key-of-the-signing-tests"


def test_a_signature_verifies_with_its_key_among_several() -> None:
    sig = signature(OLD, "/a/b/1/w10.jpg")
    verify([NEW, OLD], "/a/b/1/w10.jpg", None, sig)


@pytest.mark.parametrize(
    ("path", "source", "given_sig"),
    [
        ("/a/b/1/w11.jpg", None, signature(OLD, "/a/b/1/w10.jpg")),  # another path
        ("/a/b/1/w10.jpg", "http://x/y.jpg", signature(OLD, "/a/b/1/w10.jpg")),  # added source
        ("/a/b/1/w10.jpg", None, signature(OLD, "/a/b/1/w10.jpg", "http://x/y.jpg")),
        ("/a/b/1/w10.jpg", None, signature("other", "/a/b/1/w10.jpg")),  # unknown key
        ("/a/b/1/w10.jpg", None, ""),
        ("/a/b/1/w10.jpg", None, None),
    ],
)
def test_wrong_signatures_are_refused(path: str, source: str | None, given_sig: str | None) -> None:
    with pytest.raises(BadSignature):
        verify([OLD, NEW], path, source, given_sig)


@given(path=st.text(max_size=80), source=st.none() | st.text(max_size=80), sig=st.text(max_size=60))
def test_arbitrary_input_only_ever_raises_bad_signature(
    path: str, source: str | None, sig: str
) -> None:
    try:
        verify([OLD], path, source, sig)
    except BadSignature:
        return
    assert sig == signature(OLD, path, source)


def test_signed_requests_end_to_end(make_stack: Callable[..., Stack], origin: Origin) -> None:
    stack = make_stack(signing_keys=[NEW, OLD])
    stack.start(processors=1)
    origin.add("signed/image/1/original.jpg", photo())
    path = "/signed/image/1/w120.jpg"
    assert stack.get(path).status == 403
    assert stack.get(path, fields={"signature": "AAAA"}).status == 403
    for key in (OLD, NEW):
        response = stack.get(signed_url(key, path))
        assert response.status == 200
        assert decode(response.data).width == 120
    # A signature of one path does not open another.
    other = signed_url(NEW, path).replace("w120", "w121")
    assert stack.get(other).status == 403
    # The source is signed too.
    source = origin.url("signed/image/1/original.jpg")
    assert stack.get(signed_url(NEW, "/x/y/2/w50.jpg", source)).status == 200
    forged = signed_url(NEW, "/x/y/2/w50.jpg", source).replace("original", "other")
    assert stack.get(forged).status == 403


def test_signing_cli_prints_a_url_the_server_accepts(tmp_path: Path) -> None:
    (tmp_path / "signed.json").write_text(
        '{"source_domain": "http://127.0.0.1/", "local_base_path": "c", "originals_path": "o",'
        f' "signing_keys": ["{NEW}", "{OLD}"]}}'
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "image-server"),
            "sign",
            "--config-dir",
            str(tmp_path),
            "-e",
            "signed",
            "/a/b/1/w10.jpg",
            "--source",
            "http://127.0.0.1/o.jpg",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    url = urlsplit(done.stdout.strip())
    query = parse_qs(url.query)
    assert url.path == "/a/b/1/w10.jpg"
    verify([NEW], url.path, query["source"][0], query["signature"][0])


def signing_config(tmp_path: Path) -> list[str]:
    """A config of every kind of key; the arguments that name it."""
    (tmp_path / "keys.json").write_text(
        json.dumps(
            {
                "source_domain": "http://127.0.0.1/",
                "local_base_path": "c",
                "originals_path": "o",
                "signing_keys": [NEW],
                "purge_keys": [OLD],
                "pregenerate_keys": [NEW + "-pre"],
            }
        )
    )
    return ["--config-dir", str(tmp_path), "-e", "keys"]


def test_sign_purge_prints_what_a_delete_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sign.sign_purge_main(
        [*signing_config(tmp_path), "/a/b/1", "--source", "HTTP://X.example/o.jpg"]
    )
    url = urlsplit(capsys.readouterr().out.strip())
    query = parse_qs(url.query)
    assert url.path == "/a/b/1" and query["source"] == ["http://x.example/o.jpg"]  # normalised
    verify([OLD], purge_message(url.path), query["source"][0], query["signature"][0])
    with pytest.raises(BadSignature):  # an image URL's key cannot purge
        verify([NEW], purge_message(url.path), query["source"][0], query["signature"][0])


def test_sign_pregenerate_signs_its_outputs_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sign.sign_pregenerate_main([*signing_config(tmp_path), "/a/b/1", "x300.jpg,w500.webp"])
    url = urlsplit(capsys.readouterr().out.strip())
    query = parse_qs(url.query)
    assert query["outputs"] == ["x300.jpg,w500.webp"]
    message = pregenerate_message(url.path, query["outputs"][0])
    verify([NEW + "-pre"], message, None, query["signature"][0])
    with pytest.raises(BadSignature):  # not for other outputs
        verify([NEW + "-pre"], pregenerate_message(url.path, "w1000.png"), None,
               query["signature"][0])  # fmt: skip


def test_signing_refuses_a_source_that_cannot_be_one(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        sign.sign_main([*signing_config(tmp_path), "/a/b/1/w10.jpg", "--source", "ftp://x/o.jpg"])

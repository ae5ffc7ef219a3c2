from __future__ import annotations

import pytest

from common.errors import MessageDecodeError, SourceNotFound
from common.messages import ResizeJob, ResizeResult, UploadJob, pack
from common.urls import Fit

JOB = ResizeJob(
    cache_key="user/avatar/1/w500.jpg",
    source_url="http://127.0.0.1/user/avatar/1/original.jpg",
    fit=Fit.WIDTH,
    width=500,
    height=None,
    format="jpg",
    quality=85,
    deadline_epoch_s=1.5,
)


def test_job_round_trip() -> None:
    assert ResizeJob.decode(JOB.encode()) == JOB


def test_result_round_trip_keeps_bytes_unencoded() -> None:
    payload = bytes(range(256)) * 10
    result = ResizeResult.success("image/jpeg", payload)
    body = result.encode()
    assert payload in body  # raw, not base64
    assert ResizeResult.decode(body) == result


def test_failure_result_raises_the_same_error_class() -> None:
    result = ResizeResult.decode(ResizeResult.failure(SourceNotFound("gone")).encode())
    with pytest.raises(SourceNotFound, match="gone"):
        result.raise_for_error()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x00\x10{}",
        b"\x00\x00\x00\x02[]",
        b"\x00\x00\x00\x03\xff\xfe\xfd",
        b"garbage that is not a message at all",
        pack({"kind": "resize_result.v1", "content_type": "image/jpeg"}),
        pack({"kind": "resize_job.v1"}),
        pack({**{k: v for k, v in JOB.__dict__.items()}, "kind": "resize_job.v1", "fit": "zoom"}),
        pack({**{k: v for k, v in JOB.__dict__.items()}, "kind": "resize_job.v1", "quality": 0}),
        pack({**{k: v for k, v in JOB.__dict__.items()}, "kind": "resize_job.v1", "extra": 1}),
        pack({**{k: v for k, v in JOB.__dict__.items()}, "kind": "resize_job.v1", "width": "5"}),
    ],
)
def test_undecodable_jobs_raise_one_typed_error(body: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        ResizeJob.decode(body)


def test_a_result_written_to_the_frontends_cache_carries_no_bytes() -> None:
    made = ResizeResult.success("image/jpeg", b"\xff\xd8 bytes", resize_s=0.02)
    named = made.written_to_cache()
    body = named.encode()
    assert b"bytes" not in body and ResizeResult.decode(body) == named
    assert named.in_cache and named.content_type == "image/jpeg" and named.resize_s == 0.02
    with pytest.raises(MessageDecodeError):
        ResizeResult.decode(pack({"kind": "resize_result.v1", "content_type": "image/jpeg",
                                  "in_cache": True}, b"bytes as well"))  # fmt: skip


def test_an_upload_by_reference_names_its_file_and_host_and_carries_no_bytes() -> None:
    named = UploadJob("k", "image/jpeg", file="0123456789abcdef-0123456789abcdef", host="h-1")
    assert UploadJob.decode(named.encode()) == named
    fields = {"kind": "upload_job.v1", "key": "k", "content_type": "image/jpeg"}
    for wrong, payload in (
        ({"file": "0123456789abcdef-0123456789abcdef", "host": "h-1"}, b"bytes as well"),
        ({"file": "../../etc/passwd", "host": "h-1"}, b""),  # a name of its directory only
        ({"file": "0123456789abcdef-0123456789abcdef"}, b""),  # whose file?
    ):
        with pytest.raises(MessageDecodeError):
            UploadJob.decode(pack({**fields, **wrong}, payload))

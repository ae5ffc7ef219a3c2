"""The s3 storage backend: any S3-compatible endpoint, through the minio client."""

from __future__ import annotations

import io
import itertools
import logging
from pathlib import Path

import minio
import minio.error
import urllib3

from common.errors import StorageRefused, StorageUnavailable
from common.settings import Settings

log = logging.getLogger(__name__)
_RETRYABLE_S3_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}


class S3Store:
    reads_are_local = False

    def __init__(self, settings: Settings) -> None:
        self._bucket = settings.s3_bucket
        self._create_bucket = settings.s3_create_bucket
        http = urllib3.PoolManager(
            maxsize=max(4, settings.upload_concurrency),
            timeout=urllib3.Timeout(
                connect=settings.storage_timeout_s, read=settings.storage_timeout_s
            ),
            retries=urllib3.Retry(total=0),
        )
        # A region given here spares minio a bucket-location request.
        self._client = minio.Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )

    def prepare(self) -> None:
        """Create the bucket when it is missing and config allows it."""
        try:
            if not self._client.bucket_exists(self._bucket):
                if not self._create_bucket:
                    raise StorageRefused(f"bucket {self._bucket!r} does not exist")
                self._make_bucket()
        except (minio.error.MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc) from exc

    def _make_bucket(self) -> None:
        """Create the bucket; one made meanwhile by another upload thread or
        process of ours (after a fresh store lost it) is what we wanted."""
        try:
            self._client.make_bucket(self._bucket)
        except minio.error.S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise
            return
        log.info("created bucket %s", self._bucket)

    def put(self, key: str, data: bytes, content_type: str, same_as: Path | None = None) -> None:
        # `same_as` is of no use here: the bytes travel to the store either way.
        try:
            self._client.put_object(
                self._bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        except minio.error.S3Error as exc:
            if exc.code != "NoSuchBucket" or not self._create_bucket:
                raise _translate(exc) from exc
            self.prepare()  # the store lost its bucket (a fresh server): recreate, retry
            self.put(key, data, content_type)
        except (minio.error.MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc) from exc

    def get(self, key: str) -> bytes | None:
        try:
            response = self._client.get_object(self._bucket, key)
        except minio.error.S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise _translate(exc) from exc
        except (minio.error.MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc) from exc
        try:
            return bytes(response.read())
        except urllib3.exceptions.HTTPError as exc:
            raise _translate(exc) from exc
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self._bucket, key)
        except minio.error.S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise _translate(exc) from exc
        except (minio.error.MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc) from exc
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self._bucket, key)  # S3: no error for a missing key
        except minio.error.S3Error as exc:
            if exc.code == "NoSuchBucket":
                return
            raise _translate(exc) from exc
        except (minio.error.MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc) from exc

    def keys(self, prefix: str, start_after: str = "", limit: int = 0) -> list[str]:
        try:
            found = self._client.list_objects(
                self._bucket, prefix=prefix, recursive=True, start_after=start_after or None
            )
            names = (str(item.object_name) for item in found)  # S3 lists in key order
            return list(itertools.islice(names, limit or None))
        except minio.error.S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise _translate(exc) from exc
        except (minio.error.MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc) from exc


def _translate(exc: Exception) -> StorageUnavailable | StorageRefused:
    if isinstance(exc, minio.error.S3Error):
        if exc.code in _RETRYABLE_S3_CODES:
            return StorageUnavailable(f"object storage: {exc.code}")
        return StorageRefused(f"object storage: {exc.code}")
    return StorageUnavailable(f"object storage: {type(exc).__name__}")

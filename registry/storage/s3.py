"""Artifacts in MinIO or any S3 service, through the ``minio`` SDK.

Objects above ``part_size`` go up as a multipart upload, which S3 makes visible only when it is
completed; the SDK aborts the upload when our reader raises (size limit, digest mismatch, client
gone), so nothing is left behind. Smaller objects are a single PUT sent only after the whole
body was read and checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from registry.errors import NotFound, Unavailable
from registry.storage.base import CHUNK, HashingReader, StoredObject, check_key

_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchVersion"}


class S3Store:
    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = True,
        region: str | None = None,
        part_size: int = 16 * 1024 * 1024,
        create_bucket: bool = True,
        parallel_uploads: int = 2,
    ) -> None:
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        self.endpoint = endpoint
        self.bucket = bucket
        self.part_size = part_size
        self.parallel_uploads = parallel_uploads
        self._create_bucket = create_bucket
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with _translate(f"bucket {self.bucket}"):
            if not self.client.bucket_exists(self.bucket):
                if not self._create_bucket:
                    raise Unavailable(f"S3 bucket {self.bucket!r} does not exist")
                self.client.make_bucket(self.bucket)
        self._bucket_ready = True

    def put(self, key: str, reader: HashingReader) -> StoredObject:
        check_key(key)
        self._ensure_bucket()
        with _translate(key):
            self.client.put_object(
                self.bucket,
                key,
                reader,  # type: ignore[arg-type]  # duck-typed: minio only calls read(n)
                length=-1,
                part_size=self.part_size,
                num_parallel_uploads=self.parallel_uploads,
            )
        return StoredObject(key=key, sha256=reader.sha256, size=reader.size)

    def size(self, key: str) -> int:
        with _translate(key):
            stat = self.client.stat_object(self.bucket, check_key(key))
        assert stat.size is not None
        return stat.size

    def open_range(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        with _translate(key):
            response = self.client.get_object(
                self.bucket, check_key(key), offset=start, length=length or 0
            )
        return self._iter(response)

    @staticmethod
    def _iter(response: Any) -> Iterator[bytes]:
        try:
            yield from response.stream(CHUNK)
        finally:
            response.close()
            response.release_conn()

    def delete(self, key: str) -> None:
        with _translate(key):
            self.client.remove_object(self.bucket, check_key(key))

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        self._ensure_bucket()
        with _translate(prefix or "bucket listing"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name is not None:
                    yield obj.object_name

    def check(self) -> None:
        self._bucket_ready = False
        self._ensure_bucket()

    def describe(self) -> str:
        return f"s3:{self.endpoint}/{self.bucket}"


class _translate:
    """Map SDK and transport errors to domain errors: absent → NotFound, the rest → Unavailable."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                raise NotFound(f"artifact object {self.what!r} is missing from the store") from exc
            raise Unavailable(f"S3 error on {self.what}: {exc.code}: {exc.message}") from exc
        if isinstance(exc, (MinioException, HTTPError, OSError)):
            raise Unavailable(f"S3 service unreachable while handling {self.what}: {exc}") from exc
        return False

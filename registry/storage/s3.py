"""Artifacts in MinIO or any S3 service, through the ``minio`` SDK.

Objects above ``part_size`` go up as a multipart upload, which S3 makes visible only when it is
completed, and it is completed only after the reader reached the end of the body and checked
it. When anything fails (size limit, digest mismatch, client gone, S3 error) the parts still in
flight are waited for and the upload is then aborted, so nothing is left behind. Smaller objects
are a single PUT sent only after the whole body was read and checked.

The multipart loop is ours rather than ``Minio.put_object``'s: with parallel part uploads the
SDK aborts the upload while parts are still being sent (S3 may then keep those parts) and
leaves its worker threads blocked for ever whenever the reader raises.
"""

from __future__ import annotations

import io
import itertools
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC
from typing import Any, Literal, cast

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from registry.errors import NotFound
from registry.storage.base import (
    CHUNK,
    PROBE_EVERY_SECONDS,
    HashingReader,
    ObjectInfo,
    PartialUpload,
    StoredObject,
    StoreUnavailable,
    WriteProbe,
    check_key,
)

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchVersion"}
#: Where the readiness check writes (and at once deletes) its probe object; never an artifact.
PROBE_PREFIX = ".modelreg-probe/"


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
        http_client: urllib3.PoolManager | None = None,
        probe_every: float = PROBE_EVERY_SECONDS,
    ) -> None:
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )
        self.endpoint = endpoint
        self.bucket = bucket
        self.part_size = part_size
        self.parallel_uploads = parallel_uploads
        self._create_bucket = create_bucket
        self._bucket_ready = False
        self._probe = WriteProbe(self._write_probe, every=probe_every)

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with _translate(f"bucket {self.bucket}"):
            if not self.client.bucket_exists(self.bucket):
                if not self._create_bucket:
                    raise StoreUnavailable(f"S3 bucket {self.bucket!r} does not exist")
                self.client.make_bucket(self.bucket)
        self._bucket_ready = True

    def put(self, key: str, reader: HashingReader) -> StoredObject:
        check_key(key)
        self._ensure_bucket()
        with _translate(key):
            # Read up to two parts to learn whether one PUT will do. The list is handed on,
            # not kept, so that each part's buffer is freed as soon as it has been sent.
            pending = [reader.read(self.part_size)]
            if len(pending[0]) == self.part_size:
                second = reader.read(self.part_size)
                if second:
                    pending.append(second)
                del second
            if len(pending) > 1:
                self._put_multipart(key, reader, pending)
            else:  # the reader is at its end: size and digest were checked
                data = pending.pop()
                self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))
        return StoredObject(key=key, sha256=reader.sha256, size=reader.size)

    def _parts(self, reader: HashingReader, pending: list[bytearray]) -> Iterator[bytearray]:
        """Every part of the body; the iteration ends only once the reader checked the end."""
        while True:
            part = pending.pop(0) if pending else reader.read(self.part_size)
            if not part:
                return
            last = len(part) < self.part_size
            yield part
            del part  # do not hold a sent part while the next one is read
            if last:
                return

    def _put_multipart(self, key: str, reader: HashingReader, pending: list[bytearray]) -> None:
        upload_id = self.client._create_multipart_upload(
            self.bucket, key, {"Content-Type": "application/octet-stream"}
        )
        try:
            etags = self._upload_parts(key, upload_id, self._parts(reader, pending))
            self.client._complete_multipart_upload(
                self.bucket,
                key,
                upload_id,
                [Part(number, etag) for number, etag in enumerate(etags, 1)],
            )
        except BaseException:
            try:
                self.client._abort_multipart_upload(self.bucket, key, upload_id)
            except Exception:
                log.warning(
                    "could not abort multipart upload %s of %s; S3 keeps its parts "
                    "until `modelreg gc` (or a lifecycle rule) removes them",
                    upload_id,
                    key,
                    exc_info=True,
                )
            raise

    def _upload_parts(self, key: str, upload_id: str, parts: Iterator[bytearray]) -> list[str]:
        """Upload the parts, at most ``parallel_uploads`` at a time; their ETags in order.

        Returns, or raises, only once no part upload is running any more.
        """
        limit = max(1, self.parallel_uploads)
        etags: dict[int, str] = {}
        numbers: dict[Future[str], int] = {}
        running: set[Future[str]] = set()

        def collect(done: set[Future[str]]) -> None:
            for future in done:
                etags[numbers.pop(future)] = future.result()  # a failed part raises here

        with ThreadPoolExecutor(limit, thread_name_prefix="s3-part") as pool:
            try:
                for number in itertools.count(1):
                    # Wait for a free slot *before* reading the next part: at most ``limit``
                    # parts are in flight and one is being filled.
                    done, running = wait(
                        running,
                        timeout=0 if len(running) < limit else None,
                        return_when=FIRST_COMPLETED,
                    )
                    collect(done)
                    data = next(parts, None)
                    if data is None:
                        break
                    # minio sends any bytes-like buffer; a cast avoids copying 16 MiB to bytes.
                    future = pool.submit(
                        self.client._upload_part,
                        self.bucket,
                        key,
                        cast(bytes, data),
                        None,
                        upload_id,
                        number,
                    )
                    del data
                    numbers[future] = number
                    running.add(future)
                done, running = wait(running)
                collect(done)
            except BaseException:
                for future in running:
                    future.cancel()
                raise  # leaving the pool waits for the parts being sent
        return [etags[number] for number in sorted(etags)]

    def size(self, key: str) -> int:
        with _translate(key):
            stat = self.client.stat_object(self.bucket, check_key(key))
        assert stat.size is not None
        return stat.size

    def open_range(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        check_key(key)
        if length == 0:  # the SDK reads length 0 as "to the end"
            self.size(key)
            return iter(())
        with _translate(key):
            response = self.client.get_object(self.bucket, key, offset=start, length=length or 0)
        return self._iter(key, response)

    @staticmethod
    def _iter(key: str, response: Any) -> Iterator[bytes]:
        """The body; S3 going away in the middle of it is ``Unavailable`` too."""
        try:
            with _translate(key):
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
                if obj.object_name is not None and not obj.object_name.startswith(PROBE_PREFIX):
                    yield obj.object_name

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._ensure_bucket()
        with _translate(prefix or "bucket listing"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name is None or obj.last_modified is None:
                    continue
                if obj.object_name.startswith(PROBE_PREFIX):
                    continue
                modified = obj.last_modified
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=UTC)
                yield ObjectInfo(key=obj.object_name, size=obj.size or 0, last_modified=modified)

    def list_partial(self, prefix: str = "") -> Iterator[PartialUpload]:
        """The multipart uploads begun under ``prefix`` and neither completed nor aborted."""
        self._ensure_bucket()
        key_marker: str | None = None
        id_marker: str | None = None
        while True:
            with _translate(prefix or "multipart upload listing"):
                listing = self.client._list_multipart_uploads(
                    self.bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=id_marker
                )
            for upload in listing.uploads:
                if upload.upload_id is None or upload.initiated_time is None:
                    continue
                started = upload.initiated_time
                if started.tzinfo is None:
                    started = started.replace(tzinfo=UTC)
                yield PartialUpload(
                    handle=f"{upload.upload_id} {upload.object_name}",
                    key=upload.object_name,
                    last_modified=started,
                )
            if not listing.is_truncated or not listing.uploads:
                return
            # The SDK drops NextUploadIdMarker: the last upload listed is the marker.
            key_marker = listing.uploads[-1].object_name
            id_marker = listing.uploads[-1].upload_id

    def discard_partial(self, partial: PartialUpload) -> None:
        upload_id, _, key = partial.handle.partition(" ")
        with _translate(key):
            try:
                self.client._abort_multipart_upload(self.bucket, check_key(key), upload_id)
            except S3Error as exc:
                if exc.code != "NoSuchUpload":  # completed or aborted since the listing
                    raise

    def check(self) -> None:
        """The bucket answers, and (at most every few seconds) a small object can be written to
        it and removed: a bucket that is read-only or out of quota is not ready."""
        self._bucket_ready = False
        self._ensure_bucket()
        self._probe.check()

    def _write_probe(self) -> None:
        key = f"{PROBE_PREFIX}{uuid.uuid4()}"
        body = b"modelreg write probe\n"
        with _translate(key):
            self.client.put_object(self.bucket, key, io.BytesIO(body), len(body))
            self.client.remove_object(self.bucket, key)

    def describe(self) -> str:
        return f"s3:{self.endpoint}/{self.bucket}"


class _translate:
    """Map SDK and transport errors to domain errors: absent → NotFound, the rest → Unavailable."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> Literal[False]:
        if exc is None:
            return False
        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                raise NotFound(f"artifact object {self.what!r} is missing from the store") from exc
            raise StoreUnavailable(f"S3 error on {self.what}: {exc.code}: {exc.message}") from exc
        if isinstance(exc, (MinioException, HTTPError, OSError)):
            detail = f"S3 service unreachable while handling {self.what}: {exc}"
            raise StoreUnavailable(detail) from exc
        return False

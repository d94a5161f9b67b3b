"""The artifact store contract, on a local directory and on S3 (SeaweedFS, real HTTP).

Every store must: give back exactly the bytes it was given, in full and by range; make an
object visible only once it is complete; refuse keys that could leave its root; and, when an
upload fails (too large, wrong digest, client gone, store error), keep nothing at all.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from registry.errors import Invalid, NotFound, PayloadTooLarge, Unavailable
from registry.storage import ArtifactStore, DigestMismatch, HashingReader, UploadAborted
from registry.storage.local import LocalStore
from registry.storage.s3 import S3Store
from tests.support.ports import free_port
from tests.support.s3server import PART_SIZE, CuttingProxy, MiB, SeaweedS3

pytest_plugins = ["tests.support.s3server"]

KEY = "models/m1/versions/v1/model.onnx"
SMALL = 3 * MiB + 123  # several 1 MiB chunks, one S3 PUT
LARGE = 12 * MiB + 5  # three 5 MiB parts on S3: a multipart upload
LIMIT = 1 << 40


def body(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = 256 * 1024 + 7) -> Iterator[bytes]:
    """The body as a client sends it: odd-sized pieces."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def reader(
    data: bytes | Iterable[bytes], *, max_bytes: int = LIMIT, expected_sha256: str | None = None
) -> HashingReader:
    source = chunks(data) if isinstance(data, bytes) else data
    return HashingReader(source, max_bytes=max_bytes, expected_sha256=expected_sha256)


def read_all(store: ArtifactStore, key: str, **kwargs: int | None) -> bytes:
    return b"".join(store.open_range(key, **kwargs))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    s3: SeaweedS3 = request.getfixturevalue("seaweed")
    return s3.store(s3.new_bucket())


@pytest.fixture
def leftovers(request: pytest.FixtureRequest) -> Callable[[ArtifactStore], list[str]]:
    """Everything a store holds: objects, unfinished local files, open multipart uploads."""

    def find(store: ArtifactStore) -> list[str]:
        found = [f"object {key}" for key in store.list_keys()]
        if isinstance(store, LocalStore):
            tmp = store.root / ".tmp"
            if tmp.is_dir():
                found += [f"temp file {p.name}" for p in tmp.iterdir()]
        if isinstance(store, S3Store):
            s3: SeaweedS3 = request.getfixturevalue("seaweed")
            found += [f"object {k} (seen by boto3)" for k in s3.objects(store.bucket)]
            found += [f"multipart upload {k}" for k in s3.multipart_uploads(store.bucket)]
        return found

    return find


# -- put and read back -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(0, id="empty"),
        pytest.param(1, id="one-byte"),
        pytest.param(SMALL, id="3MiB"),
    ],
)
def test_put_then_read_back(store: ArtifactStore, size: int) -> None:
    data = body(size)
    stored = store.put(KEY, reader(data))
    assert (stored.key, stored.sha256, stored.size) == (KEY, sha(data), size)
    assert store.exists(KEY)
    assert store.size(KEY) == size
    assert read_all(store, KEY) == data
    assert list(store.list_keys()) == [KEY]


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        pytest.param(0, None, slice(0, SMALL), id="whole"),
        pytest.param(0, 10, slice(0, 10), id="head"),
        pytest.param(MiB - 5, 10, slice(MiB - 5, MiB + 5), id="across-a-chunk-boundary"),
        pytest.param(2 * MiB, None, slice(2 * MiB, SMALL), id="from-offset-to-end"),
        pytest.param(SMALL - 1, 1, slice(SMALL - 1, SMALL), id="last-byte"),
        pytest.param(SMALL - 3, 10, slice(SMALL - 3, SMALL), id="length-past-the-end"),
        pytest.param(5, 0, slice(5, 5), id="zero-length"),
    ],
)
def test_open_range(store: ArtifactStore, start: int, length: int | None, expected: slice) -> None:
    data = body(SMALL)
    store.put(KEY, reader(data))
    assert read_all(store, KEY, start=start, length=length) == data[expected]


def test_an_unread_download_holds_nothing_open(store: ArtifactStore) -> None:
    store.put(KEY, reader(b"data"))
    unread = store.open_range(KEY)  # a client gone before the response began
    del unread
    gc.collect()  # an unclosed file or socket would be reported here
    assert read_all(store, KEY) == b"data"


def test_object_appears_only_when_complete(store: ArtifactStore) -> None:
    data = body(LARGE)
    seen: list[tuple[list[str], bool]] = []

    def source() -> Iterator[bytes]:
        yield data[: 11 * MiB]  # on S3, two parts are up by now
        seen.append((list(store.list_keys()), store.exists(KEY)))
        yield data[11 * MiB :]

    store.put(KEY, reader(source()))
    assert seen == [([], False)]
    assert read_all(store, KEY) == data


def test_put_replaces_an_object_whole(store: ArtifactStore) -> None:
    store.put(KEY, reader(body(SMALL, seed=1)))
    data = body(1000, seed=2)
    store.put(KEY, reader(data))
    assert read_all(store, KEY) == data
    assert store.size(KEY) == 1000


def test_list_keys_by_prefix(store: ArtifactStore) -> None:
    keys = [
        "models/a/versions/1/model.onnx",
        "models/a/versions/2/model.pt",
        "models/b/versions/1/model.onnx",
    ]
    for key in keys:
        store.put(key, reader(key.encode()))
    assert sorted(store.list_keys()) == keys
    assert sorted(store.list_keys("models/a/")) == keys[:2]
    assert list(store.list_keys("models/c/")) == []


def test_delete_is_idempotent(
    store: ArtifactStore, leftovers: Callable[[ArtifactStore], list[str]]
) -> None:
    store.put(KEY, reader(body(SMALL)))
    store.delete(KEY)
    assert not store.exists(KEY)
    with pytest.raises(NotFound, match="missing"):
        store.size(KEY)
    with pytest.raises(NotFound, match="missing"):
        store.open_range(KEY)
    store.delete(KEY)
    store.delete("models/never/versions/was/model.onnx")
    assert leftovers(store) == []


def test_delete_keeps_the_other_objects(store: ArtifactStore) -> None:
    other = "models/m1/versions/v2/model.onnx"
    store.put(KEY, reader(b"one"))
    store.put(other, reader(b"two"))
    store.delete(KEY)
    assert list(store.list_keys()) == [other]
    assert read_all(store, other) == b"two"


def test_check_passes(store: ArtifactStore) -> None:
    store.check()
    assert store.describe()


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("../escape.onnx", id="dotdot"),
        pytest.param("models/../../escape.onnx", id="dotdot-inside"),
        pytest.param("models/./m1/model.onnx", id="dot"),
        pytest.param("models//model.onnx", id="empty-part"),
        pytest.param("models/m1/", id="trailing-slash"),
        pytest.param("models\\..\\escape.onnx", id="backslash"),
    ],
)
def test_invalid_keys_are_refused(
    store: ArtifactStore, key: str, tmp_path: Path, leftovers: Callable[[ArtifactStore], list[str]]
) -> None:
    pulled: list[bytes] = []

    def source() -> Iterator[bytes]:
        pulled.append(b"x")
        yield b"x"

    with pytest.raises(Invalid, match="invalid object key"):
        store.put(key, reader(source()))
    for call in (store.size, store.open_range, store.delete, store.exists):
        with pytest.raises(Invalid, match="invalid object key"):
            call(key)
    assert pulled == [], "the body was read for a key that was refused"
    assert leftovers(store) == []
    assert not (tmp_path / "escape.onnx").exists()


def test_local_store_refuses_keys_in_its_temp_dir(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    with pytest.raises(Invalid, match="unfinished uploads"):
        store.put(".tmp/upload-1.part", reader(b"x"))


# -- failed uploads --------------------------------------------------------------------------


def _too_large(data: bytes) -> HashingReader:
    return reader(data, max_bytes=len(data) - 1)


def _endless(data: bytes) -> HashingReader:
    return reader(itertools.repeat(data[:MiB]), max_bytes=len(data))


def _wrong_digest(data: bytes) -> HashingReader:
    return reader(data, expected_sha256=sha(data + b"!"))


def _client_gone(data: bytes) -> HashingReader:
    def source() -> Iterator[bytes]:
        yield from chunks(data[: len(data) - MiB])
        raise UploadAborted("the client disconnected")

    return reader(source())


@pytest.mark.parametrize(
    "size", [pytest.param(SMALL, id="small"), pytest.param(LARGE, id="multipart")]
)
@pytest.mark.parametrize(
    ("make_reader", "error"),
    [
        pytest.param(_too_large, PayloadTooLarge, id="one-byte-too-large"),
        pytest.param(_endless, PayloadTooLarge, id="endless-body"),
        pytest.param(_wrong_digest, DigestMismatch, id="digest-mismatch"),
        pytest.param(_client_gone, UploadAborted, id="client-gone"),
    ],
)
def test_failed_put_leaves_nothing(
    store: ArtifactStore,
    size: int,
    make_reader: Callable[[bytes], HashingReader],
    error: type[Exception],
    leftovers: Callable[[ArtifactStore], list[str]],
) -> None:
    before = set(threading.enumerate())
    with pytest.raises(error):
        store.put(KEY, make_reader(body(size)))
    assert leftovers(store) == []
    assert not store.exists(KEY)
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.endswith("(process_request_thread)")
    ]  # the S3 server's own
    assert leaked == [], "the failed upload left threads running"


def test_failed_put_keeps_the_previous_object(store: ArtifactStore) -> None:
    old = body(LARGE, seed=1)
    store.put(KEY, reader(old))
    with pytest.raises(DigestMismatch):
        store.put(KEY, _wrong_digest(body(LARGE, seed=2)))
    assert read_all(store, KEY) == old


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(str.lower, id="lowercase"),
        pytest.param(str.upper, id="uppercase"),
    ],
)
def test_a_body_of_exactly_the_limit_with_its_digest_is_kept(
    store: ArtifactStore, expected: Callable[[str], str]
) -> None:
    data = body(SMALL)
    stored = store.put(KEY, reader(data, max_bytes=SMALL, expected_sha256=expected(sha(data))))
    assert (stored.sha256, stored.size) == (sha(data), SMALL)
    assert read_all(store, KEY) == data


def test_hashing_reader_messages() -> None:
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 4 bytes"):
        reader(b"12345", max_bytes=4).read()
    with pytest.raises(DigestMismatch, match="X-Checksum-Sha256 was") as caught:
        reader(b"abc", expected_sha256="0" * 64).read()
    assert caught.value.extra == {"expected": "0" * 64, "actual": sha(b"abc")}
    with pytest.raises(RuntimeError, match="not been read to the end"):
        _ = reader(b"abc").sha256


def test_hashing_reader_checks_the_digest_before_the_last_bytes() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    wrong = HashingReader(
        [data[i : i + 1000] for i in range(0, len(data), 1000)],
        max_bytes=len(data),
        expected_sha256="0" * 64,
    )
    assert bytes(wrong.read(4096)) == data[:4096]  # parts before the end flow through
    assert bytes(wrong.read(4096)) == data[4096:8192]
    with pytest.raises(DigestMismatch):
        wrong.read(4096)  # the short last part is never handed out

    right = HashingReader([data[:7], data[7:]], max_bytes=len(data), expected_sha256=sha(data))
    pieces = [bytes(right.read(3000)) for _ in range(4)]
    assert b"".join(pieces) == data
    assert right.read(3000) == b""
    assert (right.sha256, right.size) == (sha(data), len(data))

    streamed = HashingReader([data[:7], b"", data[7:]], max_bytes=len(data))
    assert bytes(streamed.read(5)) + b"".join(streamed.chunks()) == data
    assert streamed.sha256 == sha(data)


# -- local store -----------------------------------------------------------------------------


def test_local_put_blocked_at_the_final_path_leaves_nothing(
    tmp_path: Path, leftovers: Callable[[ArtifactStore], list[str]]
) -> None:
    store = LocalStore(tmp_path / "artifacts")
    (store.root / KEY).mkdir(parents=True)  # the rename into place fails after the body
    with pytest.raises(Unavailable, match="could not write artifact"):
        store.put(KEY, reader(body(SMALL)))
    assert leftovers(store) == []


def test_local_put_without_a_temp_dir_is_unavailable(
    tmp_path: Path, leftovers: Callable[[ArtifactStore], list[str]]
) -> None:
    store = LocalStore(tmp_path / "artifacts")
    store.root.mkdir()
    (store.root / ".tmp").write_bytes(b"")  # a file where the temp dir belongs
    with pytest.raises(Unavailable, match="could not write artifact"):
        store.put(KEY, reader(b"data"))
    assert list(store.list_keys()) == []


def test_local_check_on_an_unusable_root(tmp_path: Path) -> None:
    (tmp_path / "artifacts").write_bytes(b"not a directory")
    with pytest.raises(Unavailable, match="not writable"):
        LocalStore(tmp_path / "artifacts").check()


def test_local_delete_removes_empty_folders_but_not_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    store.put(KEY, reader(b"x"))
    store.delete(KEY)
    assert store.root.is_dir()
    assert [p.name for p in store.root.iterdir() if p.name != ".tmp"] == []


# -- S3 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        pytest.param(PART_SIZE - 1, 0, id="under-one-part"),
        pytest.param(PART_SIZE, 0, id="exactly-one-part"),
        pytest.param(2 * PART_SIZE, 2, id="exactly-two-parts"),
        pytest.param(LARGE, 3, id="12MiB"),
    ],
)
def test_s3_uses_multipart_above_the_part_size(seaweed: SeaweedS3, size: int, parts: int) -> None:
    bucket = seaweed.new_bucket()
    store = seaweed.store(bucket)
    data = body(size)
    stored = store.put(KEY, reader(data))
    assert (stored.sha256, stored.size) == (sha(data), size)
    etag = seaweed.etag(bucket, KEY)
    if parts:
        assert etag.endswith(f"-{parts}"), etag  # S3's mark of a completed multipart upload
    else:
        assert "-" not in etag, etag
    assert read_all(store, KEY) == data
    assert seaweed.multipart_uploads(bucket) == []


def test_s3_connection_cut_mid_part_aborts_the_upload(
    seaweed: SeaweedS3, s3_proxy: CuttingProxy
) -> None:
    bucket = seaweed.new_bucket()
    store = seaweed.store(bucket, endpoint=s3_proxy.endpoint)
    store.check()
    s3_proxy.cut_after(7 * MiB)  # inside the second part
    with pytest.raises(Unavailable, match="S3"):
        store.put(KEY, reader(body(LARGE)))
    assert s3_proxy.cuts == 1
    assert seaweed.objects(bucket) == []
    assert seaweed.multipart_uploads(bucket) == []
    data = body(SMALL)
    store.put(KEY, reader(data))  # the store works again once S3 does
    assert read_all(store, KEY) == data


def test_s3_dead_endpoint_is_unavailable_not_missing(seaweed: SeaweedS3) -> None:
    store = seaweed.store("modelreg", endpoint=f"127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="unreachable"):
        store.check()
    with pytest.raises(Unavailable, match="unreachable"):
        store.put(KEY, reader(b"data"))
    with pytest.raises(Unavailable, match="unreachable"):
        store.size(KEY)
    with pytest.raises(Unavailable, match="unreachable"):
        store.exists(KEY)
    with pytest.raises(Unavailable, match="unreachable"):
        list(store.list_keys())


def test_s3_missing_bucket(seaweed: SeaweedS3) -> None:
    name = f"absent-{free_port()}"
    with pytest.raises(Unavailable, match="does not exist"):
        seaweed.store(name).check()
    created = seaweed.store(name, create_bucket=True)
    created.check()
    created.put(KEY, reader(b"data"))
    assert seaweed.objects(name) == [KEY]

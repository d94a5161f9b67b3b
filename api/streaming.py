"""Moving bytes between the event loop and the storage thread, and HTTP Range parsing."""

from __future__ import annotations

import asyncio
import queue
import re
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from registry.errors import RegistryError

BLOCK = 1024 * 1024


class _End:
    pass


_END = _End()


class BodyChannel:
    """Hands an async request body to a synchronous consumer thread, about 1 MiB at a time.

    The chunks the server received are passed on as they are, never joined or copied; they
    travel in batches so that the thread hand-off happens once per MiB, not once per chunk.
    At most ``depth`` batches wait in the channel, so a slow store slows the client down
    (TCP backpressure) instead of filling memory. When the consumer stops early (an error),
    ``put`` returns False and the producer stops reading the body.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, depth: int = 4) -> None:
        self._loop = loop
        self._queue: queue.Queue[list[bytes] | BaseException | _End] = queue.Queue()
        self._slots = asyncio.Semaphore(depth)
        self._batch: list[bytes] = []
        self._batched = 0
        self._consumer_gone = False

    async def put(self, chunk: bytes) -> bool:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= BLOCK:
            return await self._flush()
        return not self._consumer_gone

    async def _flush(self) -> bool:
        if self._consumer_gone:
            return False
        await self._slots.acquire()
        if self._consumer_gone:
            return False
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []
            self._batched = 0
        return True

    async def close(self) -> None:
        """The body is complete."""
        await self._flush()
        self._queue.put(_END)

    def fail(self, exc: BaseException) -> None:
        """The body will never complete: the consumer raises ``exc``."""
        self._queue.put(exc)

    def consumer_done(self, _future: object = None) -> None:
        """Called on the loop when the consumer finished, for whatever reason."""
        self._consumer_gone = True
        self._slots.release()

    def watch(self, future: Future[Any] | asyncio.Future[Any]) -> None:
        if isinstance(future, asyncio.Future):
            future.add_done_callback(self.consumer_done)
        else:
            future.add_done_callback(
                lambda f: self._loop.call_soon_threadsafe(self.consumer_done, f)
            )

    def chunks(self) -> Iterator[bytes]:
        """The consumer's side: blocks until data arrives; raises what ``fail`` was given."""
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            self._loop.call_soon_threadsafe(self._slots.release)
            yield from item


class UploadIdle(RegistryError):
    """The client stopped sending the body: no byte came for ``MODELREG_UPLOAD_IDLE_TIMEOUT``."""

    status = 408
    title = "Request timeout"


async def pump_body(
    body: AsyncIterator[bytes],
    channel: BodyChannel,
    *,
    consumer: asyncio.Future[Any],
    idle_timeout: float,
) -> None:
    """Move ``body`` into ``channel`` until it ends, the consumer stops, or the client stalls.

    Each read waits at most ``idle_timeout`` seconds for the next chunk; a client that sends
    nothing for that long fails the channel with :class:`UploadIdle`, so the consumer thread
    ends, cleans up and frees its place in the pool. A consumer that finishes first (it
    refused the upload: a conflict, a full budget, a bad name) stops the reading at once, so
    its answer does not wait for a body nobody will store. A client that goes away fails the
    channel with ``UploadAborted``.
    """
    iterator = aiter(body)
    while True:
        read: asyncio.Future[bytes] = asyncio.ensure_future(anext(iterator))
        done, _ = await asyncio.wait(
            {read, consumer}, timeout=idle_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if read not in done:
            read.cancel()
            await asyncio.wait({read})
            if consumer not in done:
                channel.fail(
                    UploadIdle(
                        f"no byte of the upload arrived for {idle_timeout:g} s "
                        "(MODELREG_UPLOAD_IDLE_TIMEOUT); nothing was kept",
                        idleTimeoutSeconds=idle_timeout,
                    )
                )
            return
        try:
            chunk = read.result()
        except StopAsyncIteration:
            await channel.close()
            return
        if not await channel.put(chunk):
            return


class RangeNotSatisfiable(RegistryError):
    status = 416
    title = "Range not satisfiable"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$", re.IGNORECASE)


def if_none_match_matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2) or is ``*``."""
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One ``bytes=`` range, or None for the whole object.

    Several ranges at once are answered with the whole object, as RFC 9110 allows; so is a
    range in a unit other than bytes, which RFC 9110 14.2 says a server must ignore.
    """
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None:
        if "," in header:
            return None
        raise RangeNotSatisfiable(f"unsupported Range header {header!r}", size=size)
    first, last = match.groups()
    if not first and not last:
        raise RangeNotSatisfiable(f"unsupported Range header {header!r}", size=size)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range", size=size)
        return ByteRange(max(size - n, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(
            f"range {header!r} is outside the artifact's {size} bytes", size=size
        )
    return ByteRange(start, min(end, size - 1))

"""How ``modelreg serve`` runs uvicorn: its limits, and the header-read timeout uvicorn lacks.

uvicorn bounds an idle kept-alive connection (``timeout_keep_alive``) but not a connection that
has not finished sending its request line and headers: one that sends nothing, or a byte every
few seconds, would hold its slot for ever. :class:`GuardedHttpProtocol` closes such a connection
``header_timeout_seconds`` after it opened, or after its next request began, and answers 431
to a request line plus headers above ``max_header_bytes`` (httptools, unlike h11, has no bound
of its own). The timer is one ``call_later`` per request, cancelled when the headers are in.

Every accepted socket gets ``TCP_NODELAY`` (:func:`set_nodelay`). :func:`main` is one API
process of ``modelreg serve``: it serves the listening socket the parent bound and passed on.

``X-Forwarded-For`` is not read here: uvicorn's proxy-header handling is off, and the app does it
itself from ``MODELREG_TRUSTED_PROXIES`` (see :func:`api.app.create_app`), so that whatever
serves the app, the client address the failed-auth throttle counts is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from registry.settings import Settings

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 35\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"request line and headers too large\n"
)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """``TCP_NODELAY`` on an accepted TCP socket. asyncio sets it only when the listening
    socket was made with ``proto=IPPROTO_TCP``; one made with ``proto=0`` (uvicorn's own
    ``--workers`` socket) leaves Nagle on, and a kept-alive client then waits for its delayed
    ACK (uvicorn issue #3149, "Known pitfalls" in ARCHITECTURE.md)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the peer may already be gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HeadersTooLarge(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound on reading headers."""

    header_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._reading_headers = False
        self._header_bytes = 0  # what the parser handed over: URL, names and values
        self._raw_bytes = 0  # what arrived since the request began, for one unfinished header

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._raw_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            return  # already refused; the connection is closing
        super().data_received(data)
        too_large = self._header_bytes > self.max_header_bytes
        if too_large or (self._reading_headers and self._raw_bytes > self.max_header_bytes):
            self._refuse_headers()

    # The parser's callbacks, in the order it calls them for each request.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_headers:  # a next request on a kept-alive connection
            self._expect_headers()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._stop_header_timer()
        super().on_headers_complete()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise _HeadersTooLarge  # stops the parser; data_received answers 431

    def _expect_headers(self) -> None:
        self._reading_headers = True
        self._header_bytes = 0
        self._raw_bytes = 0
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._reading_headers or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits behind a running one (reading is paused): not late.
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)
            return
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if self._header_bytes > self.max_header_bytes:  # the parser stopped at our bound
            self._refuse_headers()
        else:
            super().send_400_response(msg)

    def _refuse_headers(self) -> None:
        self._header_bytes = self.max_header_bytes + 1
        self._stop_header_timer()
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration ``modelreg serve`` runs ``app`` with."""

    class Protocol(GuardedHttpProtocol):
        header_timeout = settings.header_timeout_seconds
        max_header_bytes = settings.max_header_bytes

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        http=Protocol,
        proxy_headers=False,  # the app reads X-Forwarded-For, from trusted proxies only
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


class BoundServer(uvicorn.Server):
    """uvicorn's server, calling ``on_bound(url)`` once its port is bound and before it answers
    a request: what depends on the address (the credentials file, the admin key) happens only
    when the address is really ours. ``url`` carries the bound port (``--port 0`` works)."""

    def __init__(self, config: uvicorn.Config, on_bound: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_bound = on_bound

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            # Synchronous on purpose: the loop answers no request until this returns.
            self._on_bound(self.bound_port())

    def bound_port(self) -> int:
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port


def main(argv: list[str] | None = None) -> None:
    """``python -m api.server --fd N``: one API process of ``modelreg serve``, serving the
    listening socket ``N`` that ``serve`` bound (and recorded) before it started this one. It
    reads its settings from the ``MODELREG_*`` environment, as ``serve`` did."""
    from api.app import create_app

    parser = argparse.ArgumentParser(prog="python -m api.server")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    fd = parser.parse_args(argv).fd
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    # uvicorn stops on SIGTERM, then raises it again: into this handler, so the exit code is 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()

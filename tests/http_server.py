"""A real HTTP/1.1 server on 127.0.0.1 for tests: records every request, answers what a test set up.

Standard library only (``http.server.ThreadingHTTPServer`` in a thread), so the fixture
generator can use it from a flytekit venv too. Keep-alive is on (HTTP/1.1), and each recorded
request carries the client's port, so a test can see whether calls shared one connection.

Routes a test does not set answer by path:

- ``/echo``: 200, the request as JSON (method, path, query, headers, body)
- ``/status/<code>``: that status, body ``status <code>``
- ``/plain``: 200, an empty text body
- ``/json``: 200, ``{"ok": true}`` as application/json
- ``/redirect?to=<url>``: 302 to ``url``
- ``/slow?seconds=<s>``: 200 after ``s`` seconds
- ``/big?bytes=<n>``: 200, ``n`` bytes of ``x`` (with Content-Length)
- ``/chunked?bytes=<n>``: 200, ``n`` bytes in chunks, without Content-Length
- anything else: 404
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "HttpTestServer", "Recorded"]

_UNSET: Any = object()


@dataclass
class Answer:
    """What a route answers. ``json`` wins over ``body``; ``delay`` waits before answering;
    ``hang_up`` reads the request and closes the connection without a word."""

    status: int = 200
    body: bytes | str = b""
    json: Any = _UNSET
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunked: bool = False
    hang_up: bool = False  # close the connection without answering

    def payload(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.json is not _UNSET:
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.json).encode(), headers
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return (self.body.encode() if isinstance(self.body, str) else self.body), headers


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_port: int
    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # as sent, repeats included

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.raw_headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def params(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.query, keep_blank_values=True)


Route = Callable[[Recorded], Answer]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpTestServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a timeout, a capped read) is expected here: no traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests read ``requests`` instead."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(self.path)
        recorded = Recorded(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_port=self.client_address[1],
            raw_headers=list(self.headers.items()),
        )
        owner = self.server.owner
        answer = owner._answer(recorded)
        with owner._lock:
            owner.requests.append(recorded)
        if answer.delay and owner._stopping.wait(answer.delay):
            return  # the server is stopping: drop the connection unanswered
        if answer.hang_up:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload, headers = answer.payload()
        try:
            self.send_response(answer.status)
            for name, value in headers.items():
                self.send_header(name, value)
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if self.command != "HEAD":
                    for i in range(0, len(payload), 4096):
                        piece = payload[i : i + 4096]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout): fine

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class HttpTestServer:
    """A real HTTP server on 127.0.0.1 (a free port, or ``port``); use as a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[Recorded] = []
        self._routes: dict[str, list[Route]] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- set-up --------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, *answers: Answer | Route) -> None:
        """Answer ``path`` with ``answers`` in turn (the last one repeats); a callable gets the request."""
        steps: list[Route] = [a if callable(a) else (lambda _r, a=a: a) for a in answers]
        with self._lock:
            self._routes[path] = steps

    def of(self, path: str) -> list[Recorded]:
        """The requests received for ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> HttpTestServer:
        """Listen (again, on the same port after ``stop``) and serve in a thread."""
        self._stopping.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (kept-alive ones too): the port is closed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        deadline = time.monotonic() + 5
        while self._connections and time.monotonic() < deadline:
            time.sleep(0.01)  # handler threads close their sockets in finish()

    def __enter__(self) -> HttpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _answer(self, request: Recorded) -> Answer:
        with self._lock:
            steps = self._routes.get(request.path)
            step = None
            if steps:
                step = steps.pop(0) if len(steps) > 1 else steps[0]
        if step is not None:
            return step(request)
        return _builtin(request)


def _builtin(request: Recorded) -> Answer:
    params = {k: v[-1] for k, v in request.params.items()}
    path = request.path
    if path == "/echo":
        return Answer(
            json={
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "body": request.body.decode("utf-8", errors="replace"),
            }
        )
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        return Answer(status=code, body=f"status {code}")
    if path == "/plain":
        return Answer()
    if path == "/json":
        return Answer(json={"ok": True})
    if path == "/redirect":
        return Answer(status=302, headers={"Location": params["to"]})
    if path == "/slow":
        return Answer(body="slow", delay=float(params.get("seconds", "1")))
    if path in ("/big", "/chunked"):
        return Answer(body=b"x" * int(params["bytes"]), chunked=path == "/chunked")
    return Answer(status=404, body="not found")

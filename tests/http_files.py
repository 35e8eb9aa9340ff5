"""A real HTTP file server on 127.0.0.1 for download tests: Range requests, redirects, error
statuses, HTML pages, a connection dropped mid-file and a server that goes silent mid-file. Each
path behaves as its `Route` says; every request is logged, so tests assert what the client
asked (a Range header, how many requests) instead of timing anything."""

from __future__ import annotations

import re
import select
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """What one path serves."""

    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    redirect_to: str | None = None  # a 302 to this path
    drop_after: int | None = None  # the next response closes after this many body bytes
    drops: int = 0  # responses left that drop (then it serves whole)
    stall_after: int | None = None  # every response goes silent after this many body bytes
    honour_range: bool = True


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None


class FileServer:
    """`with FileServer() as server: server.routes["/f"] = Route(body=...); server.url("/f")`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append(Request(path, handler.headers.get("Range")))
        route = self.routes.get(path)
        if route is None:
            handler.send_error(404, "Not Found")
            return
        if route.redirect_to is not None:
            handler.send_response(302)
            handler.send_header("Location", route.redirect_to)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start = _range_start(handler.headers.get("Range")) if route.honour_range else 0
        body = route.body[start:]
        handler.send_response(206 if start else route.status)
        handler.send_header("Content-Type", route.content_type)
        handler.send_header("Content-Length", str(len(body)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/*")
        handler.end_headers()
        if route.drops and route.drop_after is not None:
            route.drops -= 1
            handler.wfile.write(body[: route.drop_after])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if route.stall_after is not None:
            handler.wfile.write(body[: route.stall_after])
            handler.wfile.flush()
            self._wait_for_client_to_leave(handler.connection)
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def _wait_for_client_to_leave(self, connection: socket.socket) -> None:
        """Blocks until the client closes its end (it timed out) or the server stops."""
        while not self._release.is_set():
            readable, _, _ = select.select([connection], [], [], 0.05)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (it timed out, or resumed elsewhere) is no server error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else 0

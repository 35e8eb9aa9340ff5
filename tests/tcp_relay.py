"""A TCP port on 127.0.0.1 that tests switch between forwarding to a server and dropping every
connection (the server looks down), counting the connections it dropped: tests then bound how
often a client tried while the server was away, never how long it took."""

from __future__ import annotations

import socket
import threading

from mlflow_tracking.server import free_port


class TcpRelay:
    """Forwards 127.0.0.1:port to 127.0.0.1:target_port while up; while down (`cut()`, or
    always when there is no target) it accepts each connection and closes it at once.

    The port stays open while down, so a client's attempt is a connection that is counted in
    `dropped` instead of a refusal nobody sees.
    """

    def __init__(self, target_port: int | None = None):
        self.target_port = target_port
        self.port = free_port()
        self.dropped = 0
        self._is_up = target_port is not None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """From now on every connection is dropped; open ones are closed."""
        with self._lock:
            self._is_up = False
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()

    def restore(self) -> None:
        """From now on connections are forwarded again."""
        assert self.target_port is not None, "a relay without a target cannot forward"
        with self._lock:
            self._is_up = True

    def close(self) -> None:
        self.cut()
        _close(self._listener)

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._is_up:
                    self.dropped += 1
                    _close(client)
                    continue
            assert self.target_port is not None
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if not self._is_up:  # cut meanwhile
                    self.dropped += 1
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _close(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked in accept() or recv(); close() alone would not.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

"""A real TCP relay for tests: it sits between the proxy and the backend and keeps a copy of every
byte in both directions, so a test can read exactly what went over the wire.

It can also reset connections (RST, via SO_LINGER 0) whose first bytes start an HTTP request for a
given path, to exercise the proxy's connection-reset retry.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._upstream = bytearray()  # proxy -> backend
        self._downstream = bytearray()  # backend -> proxy
        self._closing = False
        self._resets_left = 0
        self._reset_marker = b""
        self.resets_done = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="relay")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing = True
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset_next(self, count: int, request_line_prefix: bytes) -> None:
        """Reset the next `count` client writes that start with `request_line_prefix`."""
        with self._lock:
            self._resets_left = count
            self._reset_marker = request_line_prefix

    def captured(self) -> tuple[bytes, bytes]:
        """(proxy -> backend, backend -> proxy) bytes so far."""
        with self._lock:
            return bytes(self._upstream), bytes(self._downstream)

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            backend = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        threading.Thread(
            target=self._pump, args=(backend, client, self._downstream, False), daemon=True
        ).start()
        self._pump(client, backend, self._upstream, True)

    def _pump(
        self, src: socket.socket, dst: socket.socket, record: bytearray, from_client: bool
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self._should_reset(data):
                    # RST to the proxy: nothing of this request reaches the backend.
                    src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    src.close()
                    dst.close()
                    return
                with self._lock:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass

    def _should_reset(self, data: bytes) -> bool:
        with self._lock:
            if self._resets_left > 0 and data.startswith(self._reset_marker):
                self._resets_left -= 1
                self.resets_done += 1
                return True
            return False

"""A small WebSocket client (RFC 6455) on the standard library: the handshake, and frames both ways.

For what a browser will not do: a handshake without Origin, raw SIP torture messages as frames.
Client frames are masked, as RFC 6455 5.3 requires.  Every read is bounded by a timeout.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import time
from typing import Dict, Optional, Tuple


class Closed(ConnectionError):
    pass


class WebSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def handshake(
        cls, port: int, secure: bool, origin: Optional[str] = "https://example.org", protocol: str = "sip"
    ) -> Tuple[int, Dict[str, str], Optional[WebSocket]]:
        """(HTTP status, response headers, the socket when the server switched protocols)."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock: socket.socket = raw
        if secure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(raw, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {protocol}",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in head and time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            head += chunk
        text, _, rest = head.partition(b"\r\n\r\n")
        lines_in = text.decode("latin-1").split("\r\n")
        status = int(lines_in[0].split()[1]) if lines_in and len(lines_in[0].split()) > 1 else 0
        headers = {}
        for line in lines_in[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if status != 101:
            sock.close()
            return status, headers, None
        ws = cls(sock)
        ws.buffer = rest
        return status, headers, ws

    def send(self, payload: bytes) -> None:
        """One frame: text when the payload is UTF-8, binary otherwise."""
        try:
            payload.decode("utf-8")
            opcode = 0x1
        except UnicodeDecodeError:
            opcode = 0x2
        self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _read(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            except OSError as exc:
                raise Closed(str(exc)) from None
            if not chunk:
                raise Closed("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def receive(self, timeout: float) -> Optional[bytes]:
        """The next data frame's payload, None when none comes within ``timeout``; Closed when the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.receive_control(deadline - time.monotonic())
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 0x8:
                raise Closed("close frame")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x1, 0x2):
                return payload

    def ping(self, payload: bytes = b"") -> None:
        self._frame(0x9, payload)

    def receive_control(self, timeout: float) -> Optional[Tuple[int, bytes]]:
        """The next frame's (opcode, payload) whatever it is, None when none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            first, second = self._read(2, deadline)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2, deadline))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8, deadline))
            return first & 0x0F, self._read(length, deadline)
        except TimeoutError:
            return None

    def close(self) -> None:
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()

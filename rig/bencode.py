"""Just enough bencode for rtpengine's ng protocol (dicts, lists, byte strings, integers)."""

from __future__ import annotations

from typing import Any, Tuple


def encode(value: Any) -> bytes:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(encode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """Byte strings come back as str (ng is UTF-8 text), so results compare with plain dicts."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes after bencoded value at {end}")
    return value


def _decode(data: bytes, pos: int) -> Tuple[Any, int]:
    head = data[pos : pos + 1]
    if head == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if head == b"l":
        items = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if head == b"d":
        result = {}
        pos += 1
        while data[pos : pos + 1] != b"e":
            key, pos = _decode(data, pos)
            result[key], pos = _decode(data, pos)
        return result, pos + 1
    if head.isdigit():
        colon = data.index(b":", pos)
        length = int(data[pos:colon])
        start = colon + 1
        return data[start : start + length].decode("utf-8", errors="replace"), start + length
    raise ValueError(f"bad bencode at {pos}: {data[pos : pos + 10]!r}")

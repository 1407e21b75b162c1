"""Bencode as rtpengine's ng protocol speaks it.

rtpengine writes dictionary keys in the order it built them, not sorted as
BitTorrent's bencode requires, so strict decoders (fastbencode) refuse its
replies; this one accepts any key order and writes sorted keys itself.
Strings come back as bytes; the caller decodes them.
"""

from __future__ import annotations

from typing import Any, List, Tuple, Union

Value = Union[bytes, int, List[Any], "dict[bytes, Any]"]
MAX_DEPTH = 32


def encode(value: Any) -> bytes:
    """Bencode str (UTF-8), bytes, int, list/tuple and dict (str or bytes keys)."""
    out: List[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: List[bytes]) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        out += [str(len(value)).encode(), b":", value]
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        items = [(k.encode("utf-8") if isinstance(k, str) else k, v) for k, v in value.items()]
        for key, item in sorted(items):
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """The one value ``data`` holds; ValueError on anything malformed or trailing."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise ValueError(f"trailing data at {end}")
    return value


def _decode(data: bytes, at: int, depth: int) -> Tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deep")
    if at >= len(data):
        raise ValueError("truncated")
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if lead == b"l":
        items: List[Any] = []
        at += 1
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if lead == b"d":
        result: dict[bytes, Any] = {}
        at += 1
        while data[at : at + 1] != b"e":
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, bytes):
                raise ValueError("dictionary key is not a string")
            result[key], at = _decode(data, at, depth + 1)
        return result, at + 1
    if lead.isdigit():
        colon = data.index(b":", at)
        length = int(data[at:colon])
        start = colon + 1
        if start + length > len(data):
            raise ValueError("truncated string")
        return data[start : start + length], start + length
    raise ValueError(f"unexpected {lead!r} at {at}")

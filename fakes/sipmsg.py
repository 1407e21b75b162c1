"""SIP messages for the fake host, parsed from raw text.

The start line, URIs, addresses and Vias go through ``sipmessage`` (a typed SIP
parser); header names are kept exactly as they were written, because
OpenSIPS's ``getHeader`` matches raw names and does not expand compact forms
(``getHeader("Contact")`` does not find ``m:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import sipmessage

COMPACT = {k: v.lower() for k, v in sipmessage.message.COMPACT_FORMS.items()}


def canonical(name: str) -> str:
    """Lower-case long form of a header name (``m`` -> ``contact``)."""
    low = name.strip().lower()
    return COMPACT.get(low, low)


@dataclass
class SipMessage:
    """A mutable SIP message: what the fake host reads and what its routes change."""

    first_line: str
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    original_ruri: Optional[str] = field(default=None, compare=False, repr=False)
    """The request URI as it came ($ou), once a route rewrote it: OpenSIPS keeps the first line as received and
    the new one apart (new_uri), and so do its clones (tm's request, the failure route's faked one)."""

    # -- parsing --------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        """Parse raw bytes; ValueError where OpenSIPS's parser would drop the message."""
        if b"\r\n\r\n" in data:
            head, body = data.split(b"\r\n\r\n", 1)
        elif b"\n\n" in data:
            head, body = data.split(b"\n\n", 1)
        else:
            raise ValueError("no end of headers")
        text = head.decode("utf-8", errors="surrogateescape")
        lines = re.split(r"\r?\n", text)
        first, raw_headers = lines[0], lines[1:]
        headers: List[Tuple[str, str]] = []
        for line in raw_headers:
            if line[:1] in (" ", "\t") and headers:  # folded continuation (RFC 3261 7.3.1)
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or " " in name.strip():
                raise ValueError(f"bad header line {line!r}")
            headers.append((name.strip(), value.strip()))
        message = cls(first, headers, body)
        message.validate()
        return message

    def validate(self) -> None:
        """Checks OpenSIPS makes before a request reaches the script."""
        parts = self.first_line.split(" ", 2)
        if len(parts) < 3:
            raise ValueError(f"bad start line {self.first_line!r}")
        if parts[0] == "SIP/2.0":
            if not (parts[1].isdigit() and len(parts[1]) == 3):
                raise ValueError(f"bad status code {parts[1]!r}")
        else:
            if parts[2] != "SIP/2.0":
                raise ValueError(f"unsupported version {parts[2]!r}")
            sipmessage.URI.parse(parts[1])
        for name in ("via", "call-id", "cseq", "from", "to"):
            if self.header(name) is None:
                raise ValueError(f"missing {name} header")
        sipmessage.CSeq.parse(self.header("cseq") or "")
        sipmessage.Via.parse((self.header("via") or "").split(",")[0].strip())

    # -- reading --------------------------------------------------------------------

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        return self.cseq_method

    @property
    def ruri(self) -> str:
        return self.first_line.split(" ")[1]

    @ruri.setter
    def ruri(self, uri: str) -> None:
        if self.original_ruri is None:
            self.original_ruri = self.ruri
        method, _, version = self.first_line.split(" ", 2)
        self.first_line = f"{method} {uri} {version}"

    @property
    def status(self) -> int:
        return int(self.first_line.split(" ")[1])

    @property
    def cseq_method(self) -> str:
        return sipmessage.CSeq.parse(self.header("cseq") or "").method

    @property
    def cseq_number(self) -> int:
        return sipmessage.CSeq.parse(self.header("cseq") or "").sequence

    def header(self, name: str) -> Optional[str]:
        """First header with this name, compact forms included (what OpenSIPS's own parser sees)."""
        wanted = canonical(name)
        for key, value in self.headers:
            if canonical(key) == wanted:
                return value
        return None

    def header_values(self, name: str) -> List[str]:
        wanted = canonical(name)
        return [v for k, v in self.headers if canonical(k) == wanted]

    def raw_header(self, name: str) -> Optional[str]:
        """getHeader semantics: raw name, case-insensitive, no compact-form expansion."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    def _tag(self, name: str) -> Optional[str]:
        value = self.header(name)
        if value is None:
            return None
        try:
            return sipmessage.Address.parse(value).parameters.get("tag")
        except ValueError:
            match = re.search(r";\s*tag=([^;>\s]+)", value)
            return match.group(1) if match else None

    @property
    def from_tag(self) -> Optional[str]:
        return self._tag("from")

    @property
    def to_tag(self) -> Optional[str]:
        return self._tag("to")

    def address_uri(self, name: str) -> Optional[str]:
        value = self.header(name)
        if value is None:
            return None
        try:
            return str(sipmessage.Address.parse(value.split(",")[0]).uri)
        except ValueError:
            return None

    def vias(self) -> Iterator[str]:
        for value in self.header_values("via"):
            for part in value.split(","):
                yield part.strip()

    def top_via_branch(self) -> Optional[str]:
        for via in self.vias():
            match = re.search(r";\s*branch=([^;\s,]+)", via)
            return match.group(1) if match else None
        return None

    # -- changing -------------------------------------------------------------------

    def add_header_first(self, name: str, value: str) -> None:
        self.headers.insert(0, (name, value))

    def remove_first(self, name: str) -> None:
        wanted = canonical(name)
        for i, (key, _) in enumerate(self.headers):
            if canonical(key) == wanted:
                del self.headers[i]
                return

    def set_header(self, name: str, value: str) -> None:
        wanted = canonical(name)
        for i, (key, _) in enumerate(self.headers):
            if canonical(key) == wanted:
                self.headers[i] = (key, value)
                return
        self.headers.append((name, value))

    def set_body(self, body: bytes, content_type: Optional[str] = "application/sdp") -> None:
        self.body = body
        self.set_header("Content-Length", str(len(body)))
        if body and content_type:
            self.set_header("Content-Type", content_type)

    def copy(self) -> SipMessage:
        return SipMessage(self.first_line, list(self.headers), self.body, self.original_ruri)

    def to_bytes(self) -> bytes:
        head = "\r\n".join([self.first_line] + [f"{k}: {v}" for k, v in self.headers])
        return head.encode("utf-8", errors="surrogateescape") + b"\r\n\r\n" + self.body

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", errors="replace")

"""Just enough SDP reading for user agents and tests: media sections, codecs, attributes.

The router has its own (``pyscripts/gateway/sdp.py``, stdlib-only and minimal);
this one serves the fakes and the tests that judge what each leg receives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: The direction an answerer takes for each offered one (RFC 3264 section 6.1).
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


@dataclass
class Media:
    """One m= section."""

    kind: str
    port: int
    proto: str
    formats: List[str]
    lines: List[str] = field(default_factory=list)
    """Every line after the m= line up to the next one (c=, a=, ...)."""
    session: List[str] = field(default_factory=list)
    """The session-level lines (before the first m=), for values that may sit there."""

    def attributes(self, name: str) -> List[str]:
        """Values of ``a=name:value`` (or ``""`` for a bare ``a=name``) at media, then session level."""
        found = [_attr_value(line, name) for line in self.lines]
        values = [v for v in found if v is not None]
        if values:
            return values
        return [v for v in (_attr_value(line, name) for line in self.session) if v is not None]

    def has(self, name: str) -> bool:
        return bool(self.attributes(name))

    @property
    def codecs(self) -> Dict[str, str]:
        """Payload type -> encoding name (``"0" -> "PCMU"``), static types included."""
        names = {"0": "PCMU", "8": "PCMA", "9": "G722", "18": "G729", "13": "CN"}
        result = {pt: names.get(pt, "") for pt in self.formats}
        for value in self.attributes("rtpmap"):
            pt, _, rest = value.partition(" ")
            if pt in result:
                result[pt] = rest.split("/")[0]
        return result

    @property
    def codec_names(self) -> List[str]:
        return [name for name in self.codecs.values() if name]

    @property
    def connection(self) -> Optional[str]:
        for line in [*self.lines, *self.session]:
            if line.startswith("c="):
                parts = line[2:].split()
                return parts[2].split("/")[0] if len(parts) >= 3 else None
        return None

    @property
    def direction(self) -> str:
        for line in [*self.lines, *self.session]:
            if line[2:] in DIRECTIONS and line.startswith("a="):
                return line[2:]
        return "sendrecv"


def _attr_value(line: str, name: str) -> Optional[str]:
    if not line.startswith("a="):
        return None
    key, sep, value = line[2:].partition(":")
    if key != name:
        return None
    return value if sep else ""


def lines(sdp: str) -> List[str]:
    return [line for line in re.split(r"\r?\n", sdp) if line]


def media(sdp: str) -> List[Media]:
    """The m= sections of an SDP body, in order."""
    session: List[str] = []
    sections: List[Media] = []
    for line in lines(sdp):
        if line.startswith("m="):
            parts = line[2:].split()
            sections.append(Media(parts[0], int(parts[1]), parts[2], parts[3:], [], session))
        elif sections:
            sections[-1].lines.append(line)
        else:
            session.append(line)
    return sections


def audio(sdp: str) -> Media:
    for section in media(sdp):
        if section.kind == "audio":
            return section
    raise ValueError("no audio m= line")

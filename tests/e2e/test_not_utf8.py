"""Bytes that are not UTF-8 in what a sender writes, against the real OpenSIPS.

The router's facts come in python_exec's argument, which the python module turns
into a str with PyUnicode_FromString: bytes that are not UTF-8 there make
python_exec fail and leave the UnicodeDecodeError pending in the worker, where it
breaks the next message (python_exec.c).  The cfg passes the sender's strings as
lengths or hex, so each such request gets a clear answer and every worker goes on
routing.
"""

from __future__ import annotations

import re
from typing import Callable, List, Tuple

import pytest

from .conftest import Rig
from .rawsip import SipSocket

# (what, how the request's bytes change, the answers it may get): 400 when the router read the
# bytes, 404 (no such user, no such dialog) when the router needs only their length or type.
Change = Callable[[bytes], bytes]
CASES: List[Tuple[str, Change, Tuple[int, ...]]] = [  # each from a source of its own: pike counts per source
    (
        "From domain",
        lambda m: re.sub(rb"(From: <sip:raw\d+)@[^>]+>", lambda g: g.group(1) + b"@caf\xe9.example>", m, count=1),
        (400,),
    ),
    ("To domain", lambda m: m.replace(b"To: <sip:nobody@127.0.0.1>", b"To: <sip:nobody@b\xe9.example>", 1), (400,)),
    ("R-URI user", lambda m: m.replace(b"sip:nobody@", b"sip:n\xf6body@", 1), (404,)),
    ("Content-Type", lambda m: m.replace(b"Max-Forwards", b"Content-Type: text/\xe9\r\nMax-Forwards", 1), (404,)),
    ("To-tag", lambda m: m.replace(b"To: <sip:nobody@127.0.0.1>", b"To: <sip:nobody@127.0.0.1>;tag=\xe9", 1), (404,)),
]


@pytest.mark.parametrize(("what", "change", "answers"), CASES, ids=[c[0] for c in CASES])
def test_a_request_with_bytes_that_are_not_utf8_is_answered_and_poisons_no_worker(
    gateway: Rig, what: str, change: Change, answers: Tuple[int, ...]
) -> None:
    before = gateway.statistics("python_failures")["python_failures"]
    offset = gateway.log_size()
    source = f"127.0.0.{60 + [c[0] for c in CASES].index(what)}"
    with SipSocket(gateway.sip, source) as sip:
        bad = change(sip.request("OPTIONS", "sip:nobody@127.0.0.1"))
        assert b"\xe9" in bad or b"\xf6" in bad
        reply = sip.final(bad, timeout=5)
        assert reply is not None and reply.status in answers, (what, reply)
        print(f"FIGURE opensips-{gateway.gw.version}: not UTF-8 in the {what}: {reply.status} {reply.reason}")
        # Every UDP worker must still route: with an error left pending, the next python_exec
        # in that worker would fail (500 and python_failures) instead of answering 404.
        for _ in range(12):
            fine = sip.final(sip.request("OPTIONS", "sip:nobody@127.0.0.1"), timeout=5)
            assert fine is not None and fine.status == 404, fine
    assert gateway.statistics("python_failures")["python_failures"] == before
    log = gateway.log_since(offset)  # this test's own lines: an earlier test's would not be this one's failure
    assert "PyUnicode_FromString" not in log and "exception set" not in log

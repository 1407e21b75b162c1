"""The fake host behaves like OpenSIPS's python module, quirks included (docs/host-facts.md), and fails tests loudly."""

from __future__ import annotations

import importlib
import locale
from typing import Any, Callable, Dict, List

import pytest

from fakes.msgobj import FakeMsg, HostCrash
from fakes.runtime import Context, Endpoint, Gateway, HostFault
from fakes.sipmsg import SipMessage

INVITE = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\r\n"
    b"f: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"t: <sip:bob@127.0.0.1>\r\n"
    b"i: c1@x\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@10.0.0.5:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
REPLY = (
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
    b"To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
)
SOURCE = Endpoint("udp", "127.0.0.9", 5062)


class Probe:
    """A handler that runs one function against the msg it gets."""

    def __init__(self, action: Callable[[Any], Any]) -> None:
        self.action = action
        self.kept: List[Any] = []

    def child_init(self, rank: int) -> int:
        return 0

    def on_request(self, msg: Any) -> Any:
        return self.action(msg)


def run(action: Callable[[Any], Any], raw: bytes = INVITE, strict: bool = True) -> Gateway:
    gateway = Gateway(strict=strict)
    gateway.router = Probe(action)
    ctx = Context(gateway, "request", SipMessage.parse(raw), SOURCE)
    gateway.python_exec("on_request", ctx)
    return gateway


def test_attributes_are_strings_and_tuples() -> None:
    seen: Dict[str, Any] = {}

    def look(msg: Any) -> int:
        seen.update(type=msg.Type, method=msg.Method, ruri=msg.RURI, src=msg.src_address)
        return 1

    run(look)
    assert seen == {"type": "SIP_REQUEST", "method": "INVITE", "ruri": "sip:bob@127.0.0.1", "src": ("127.0.0.9", 5062)}


def test_get_header_does_not_expand_compact_forms() -> None:
    seen: Dict[str, Any] = {}

    def look(msg: Any) -> int:
        seen.update(long=msg.getHeader("Contact"), short=msg.getHeader("m"), cid=msg.getHeader("CALL-ID"))
        return 1

    run(look)
    assert seen == {"long": None, "short": "<sip:alice@10.0.0.5:5060>", "cid": None}


def test_get_pseudovar_formats_a_whole_string_and_says_null() -> None:
    seen = []
    run(lambda msg: seen.append(msg.get_pseudoVar("$si:$sp|$tt|$ci|$socket_in(proto)")) or 1)
    assert seen == ["127.0.0.9:5062|<null>|c1@x|udp"]


def test_an_unknown_pseudovar_is_none_and_logged() -> None:
    seen = []
    gateway = run(lambda msg: seen.append(msg.get_pseudoVar("$pr")) or 1)
    assert seen == [None] and any("unknown pseudo-variable" in e for e in gateway.errors)


def test_set_pseudovar_takes_strings_only() -> None:
    with pytest.raises(HostFault, match="TypeError"):
        run(lambda msg: msg.set_pseudoVar("$avp(x)", 5) or 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda msg: msg.call_function("xlog", "hello"),  # a statement, not a function
        lambda msg: msg.call_function("sl_send_reply", 404, "Not Found"),  # an int argument
        lambda msg: msg.call_function("sl_send_reply", "Not Found", "404"),  # not an integer
        lambda msg: msg.call_function("sl_send_reply", "404"),  # too few
        lambda msg: msg.call_function("setflag", "A", "B"),  # too many
        lambda msg: msg.call_function("sl_send_reply", None, "x"),  # mandatory omitted
        lambda msg: msg.call_function("rtpengine_delete", None, "not-a-var"),
    ],
)
def test_call_function_failures_are_system_errors(call: Callable[[Any], Any]) -> None:
    errors: List[BaseException] = []

    def attempt(msg: Any) -> int:
        try:
            call(msg)
        except SystemError as exc:
            errors.append(exc)
        return 1

    run(attempt)
    assert len(errors) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda msg: msg.call_function("setbflag", "WEBRTC"),
        lambda msg: msg.call_function("isbflagset", "NATED"),
        lambda msg: msg.call_function("rtpengine_offer", "RTP/AVP"),
        lambda msg: msg.call_function("rtpengine_answer", "RTP/AVP", None),
        lambda msg: msg.call_function("rtpengine_delete"),
    ],
)
def test_an_omitted_optional_int_or_var_parameter_crashes(call: Callable[[Any], Any]) -> None:
    def attempt(msg: Any) -> int:
        try:
            call(msg)
        except Exception:  # noqa: BLE001 - a crash is not an exception the script could catch
            pass
        return 1

    with pytest.raises(HostCrash, match="segfaults"):
        run(attempt)


def test_explicit_none_for_optional_parameters_is_safe() -> None:
    results = []
    run(
        lambda msg: (
            results.extend(
                [msg.call_function("setbflag", "WEBRTC", None), msg.call_function("isbflagset", "WEBRTC", None)]
            )
            or 1
        )
    )
    assert results == [1, 1]


def test_optional_string_parameters_may_be_left_out() -> None:
    gateway = run(lambda msg: msg.call_function("record_route") and 1)
    assert gateway.omitted == [("record_route", 0, "str")]


def test_flags_not_named_in_the_cfg_fail() -> None:
    with pytest.raises(HostFault, match=r"not named in opensips\.cfg"):
        run(lambda msg: msg.call_function("setflag", "UNDECLARED") and 1)


def test_reading_status_on_a_request_leaves_an_exception_pending() -> None:
    with pytest.raises(HostFault, match="pending: Status read on a request"):
        run(lambda msg: 1 if msg.Status is None else 2)


def test_a_pending_exception_breaks_the_next_host_call() -> None:
    errors: List[BaseException] = []

    def look(msg: Any) -> int:
        assert msg.Status is None
        try:
            msg.getHeader("Via")
        except SystemError as exc:
            errors.append(exc)
        return 1

    run(look)
    assert "exception set" in str(errors[0])


def test_method_on_a_reply_leaves_an_exception_pending() -> None:
    with pytest.raises(HostFault, match="Method read on a reply"):
        run(lambda msg: 1 if msg.Method is None else 2, raw=REPLY)


@pytest.mark.parametrize(
    ("result", "complaint"),
    [(0, "ends the whole script"), (None, "not an int"), ("1", "not an int"), (1.0, "not an int")],
)
def test_bad_return_values_fail_loudly(result: Any, complaint: str) -> None:
    with pytest.raises(HostFault, match=complaint):
        run(lambda msg: result)


def test_a_non_int_return_poisons_the_next_call_when_not_strict() -> None:
    gateway = run(lambda msg: None, strict=False)
    ctx = Context(gateway, "request", SipMessage.parse(INVITE), SOURCE)
    assert gateway.python_exec("on_request", ctx) == -1
    assert any("exception pending" in e for e in gateway.errors)


def test_a_huge_int_is_truncated_like_c_does() -> None:
    gateway = run(lambda msg: 1, strict=False)
    gateway.router = Probe(lambda msg: 2**40)
    ctx = Context(gateway, "request", SipMessage.parse(INVITE), SOURCE)
    assert gateway.python_exec("on_request", ctx) == 0


def test_an_exception_escaping_a_route_fails_the_test() -> None:
    with pytest.raises(HostFault, match="ZeroDivisionError"):
        run(lambda msg: 1 // 0)


def test_the_msg_is_invalid_after_the_route() -> None:
    probe = Probe(lambda msg: 1)

    def keep(msg: Any) -> int:
        probe.kept.append(msg)
        return 1

    run(keep)
    with pytest.raises(SystemError, match="after its route returned"):
        _ = probe.kept[0].Method


def test_a_copy_dangles_into_the_next_message() -> None:
    copies: List[FakeMsg] = []
    gateway = run(lambda msg: copies.append(msg.copy()) or 1)
    gateway.router = Probe(lambda msg: copies[0].getHeader("m") and 1)
    ctx = Context(gateway, "request", SipMessage.parse(INVITE.replace(b"alice@10.0.0.5", b"mallory@10.9.9.9")), SOURCE)
    gateway.python_exec("on_request", ctx)
    assert gateway.copies == 1
    gateway.router = Probe(lambda msg: 1)
    gateway.current = ctx
    assert copies[0].getHeader("m") == "<sip:mallory@10.9.9.9:5060>"


def test_only_lm_err_is_exported() -> None:
    import OpenSIPS  # type: ignore[import-not-found,unused-ignore]

    Gateway()
    assert [n for n in dir(OpenSIPS) if not n.startswith("_")] == ["LM_ERR"]


class FactsProbe(Probe):
    """A handler that keeps the facts python_exec passed."""

    def __init__(self) -> None:
        super().__init__(lambda msg: 1)
        self.facts: List[str] = []

    def on_request(self, msg: Any, facts: str = "") -> Any:
        self.facts.append(facts)
        return 1


def exec_with(fmt: str, raw: bytes = INVITE, strict: bool = True) -> tuple[Gateway, FactsProbe, int]:
    gateway = Gateway(strict=strict)
    probe = FactsProbe()
    gateway.router = probe
    ctx = Context(gateway, "request", SipMessage.parse(raw), SOURCE)
    # the cfg's python_exec prints its format string first (cfgscript)
    return gateway, probe, gateway.python_exec("on_request", ctx, gateway.runner.format(fmt, ctx))


def test_the_argument_is_printed_with_its_transformations() -> None:
    # transformations.c: {s.len} in bytes, {s.encode.hexa} lower-case hex, a null value stays null
    _, probe, rc = exec_with("$rm\n$(rU{s.len})\n$(rd{s.encode.hexa})\n$(tt{s.len})\n$hdrcnt(Contact)\n$(td{s.len})")
    assert rc == 1
    assert probe.facts == ["INVITE\n3\n" + b"127.0.0.1".hex() + "\n<null>\n1\n9"]


def test_an_argument_that_is_not_utf8_fails_and_poisons_the_worker() -> None:
    # python_exec.c: PyUnicode_FromString fails, -1, and the UnicodeDecodeError stays pending
    latin1 = INVITE.replace(b"f: <sip:alice@127.0.0.1>", b"f: <sip:alice@caf\xe9.example>")
    with pytest.raises(HostFault, match="not UTF-8"):
        exec_with("$fd", latin1)
    gateway, probe, rc = exec_with("$fd", latin1, strict=False)
    assert rc == -1 and probe.facts == [] and any("PyUnicode_FromString" in e for e in gateway.errors)
    ctx = Context(gateway, "request", SipMessage.parse(INVITE), SOURCE)
    assert gateway.python_exec("on_request", ctx, "INVITE") == -1  # the innocent next message pays
    assert any("exception pending" in e for e in gateway.errors)
    _, probe, rc = exec_with("$(fd{s.len})\n$(fd{s.encode.hexa})", latin1)  # what the cfg passes instead
    assert rc == 1 and probe.facts == ["12\n" + b"caf\xe9.example".hex()]


def test_mod_init_gives_opensips_back_the_c_locale() -> None:
    """Py_Initialize sets the C library's LC_CTYPE from the environment (LANG=C.UTF-8, ...); OpenSIPS runs
    in "C", and in a multibyte locale glibc's regex (the cfg's =~) takes its wide-character path.
    mod_init, which runs before the workers fork, sets "C" again; the fake keeps the test process's."""
    kept = locale.setlocale(locale.LC_CTYPE)
    try:
        try:
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        except locale.Error:
            pytest.skip("no C.UTF-8 locale here")
        Gateway()
        assert locale.setlocale(locale.LC_CTYPE) == "C.UTF-8"
        importlib.import_module("opensips_entry").mod_init()
        assert locale.setlocale(locale.LC_CTYPE) == "C"
    finally:
        locale.setlocale(locale.LC_CTYPE, kept)


@pytest.mark.parametrize(
    ("uri", "endpoint"),
    [
        ("sip:198.51.100.5", ("udp", "198.51.100.5", 5060)),
        ("sip:198.51.100.5;transport=tls", ("tls", "198.51.100.5", 5061)),
        ("sips:198.51.100.5", ("tls", "198.51.100.5", 5061)),
        ("sip:198.51.100.5:5070;transport=TLS", ("tls", "198.51.100.5", 5070)),
        ("sip:[2001:db8::5];transport=tls", ("tls", "2001:db8::5", 5061)),
        ("sip:bob@[2001:db8::5]:6000;transport=tcp", ("tcp", "2001:db8::5", 6000)),
    ],
)
def test_where_a_uri_leads_without_a_port_is_its_transports_default(uri: str, endpoint: Any) -> None:
    """sip_resolvehost (resolve.c) gives an address without a port the protocol's default: 5061 for TLS."""
    from fakes.runtime import uri_endpoint

    assert uri_endpoint(uri) == Endpoint(*endpoint)

"""SIP phones played by SIPp: scenarios built from a few steps, run against the rig.

A ``Phone`` is one SIP device (a user name, UDP or TCP, its own signalling and
media ports).  It registers with a SIPp REGISTER scenario sent from the port it
will then listen on, answers calls as a SIPp UAS that echoes RTP back
(``-rtp_echo``), and places calls as a SIPp UAC that plays a G.711 A-law pcap.
A call script is a list of steps for each side; in-dialog requests carry the
routes SIPp learnt from Record-Route.  Every SIPp run is bounded by
``-timeout`` and by the subprocess timeout, and is stopped by pid.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from . import netns
from .ports import free_port

PCAP = "/usr/share/sip-tester/g711a.pcap"
DTMF_PCAPS = "/usr/share/sip-tester"

# Steps of a call script.
Step = Union[
    Tuple[str],  # ("bye",), ("expect_bye",), ("expect_reinvite",), ("play",)
    Tuple[str, int],  # ("pause", ms)
    Tuple[str, str],  # ("reinvite", "sendonly" | "sendrecv"), ("bye", "Extra-Header: value"), ("bye_refused", "480"),
    # ("dtmf", "159#")
]

SDP = """v=0
o=- 53655765 [cseq] IN IP4 [media_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP {pt} 101
a=rtpmap:{pt} {codec}
a=rtpmap:101 telephone-event/8000
a={direction}
"""

#: The one audio codec a phone's SDP names: its static payload type and rtpmap.
CODECS = {"PCMA": (8, "PCMA/8000"), "PCMU": (0, "PCMU/8000"), "G722": (9, "G722/8000")}


def body(direction: str = "sendrecv", codec: str = "PCMA") -> str:
    """A SIPp phone's SDP (SIPp fills in its bracketed keywords): one codec and telephone-event."""
    pt, rtpmap = CODECS[codec]
    return SDP.replace("{direction}", direction).replace("{pt}", str(pt)).replace("{codec}", rtpmap)


@dataclass
class Phone:
    user: str
    transport: str = "udp"  # udp or tcp
    port: int = field(default_factory=free_port)
    media_port: int = field(default_factory=lambda: free_port(tcp=False, even=True, span=6))
    contact_host: str = "127.0.0.1"
    """The host in the Contact it registers; a private address makes the gateway see it behind NAT."""
    host: str = "127.0.0.1"
    """The loopback address SIPp binds for signalling and media (another 127.x: a source of its own for pike)."""
    namespace: Optional[str] = None
    """The network namespace SIPp runs in (rig/netns.py: a host of a test network); None: the machine's own."""

    @property
    def sipp_transport(self) -> str:
        return "u1" if self.transport == "udp" else "t1"

    @property
    def contact(self) -> str:
        suffix = "" if self.transport == "udp" else ";transport=tcp"
        return f"sip:{self.user}@{self.contact_host}:{self.port}{suffix}"


class Scenario:
    """A SIPp scenario under construction; ``[branch-N]`` offsets are kept for ACK/CANCEL of an INVITE."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: List[str] = []
        self.invite_at: Optional[int] = None
        self.cseq = 1

    def _add(self, xml: str) -> None:
        self.parts.append(xml)

    def send(self, text: str, retrans: bool = True) -> None:
        lines = [line for line in text.strip("\n").split("\n")]
        message = "\n".join(lines).replace("\n\n", "\n\n", 1)
        attrs = ' retrans="500"' if retrans else ""
        self._add(f"<send{attrs}><![CDATA[\n\n{message}\n\n]]></send>")

    def recv(self, what: str, optional: bool = False, extra: str = "", actions: str = "") -> None:
        kind = "response" if what.isdigit() else "request"
        opt = ' optional="true"' if optional else ""
        body = f"<action>{actions}</action>" if actions else ""
        self._add(f'<recv {kind}="{what}"{opt}{extra}>{body}</recv>')

    def pause(self, ms: int) -> None:
        self._add(f'<pause milliseconds="{ms}"/>')

    def play(self) -> None:
        self._add(f'<nop><action><exec play_pcap_audio="{PCAP}"/></action></nop>')

    def dtmf(self, digits: str) -> None:
        """RFC 4733 events in RTP, payload type 101, one digit every 600 ms (SIPp's recorded events)."""
        for digit in digits:
            name = {"*": "star", "#": "pound"}.get(digit, digit)
            self._add(f'<nop><action><exec play_pcap_audio="{DTMF_PCAPS}/dtmf_2833_{name}.pcap"/></action></nop>')
            self.pause(600)

    @property
    def index(self) -> int:
        return len(self.parts)

    def branch_of_invite(self) -> str:
        assert self.invite_at is not None
        return f"[branch-{self.index - self.invite_at}]"

    def xml(self) -> str:
        body = "\n".join(self.parts)
        return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{self.name}">\n{body}\n</scenario>\n'


VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}"


def register_scenario(
    phone: Phone, domain: str, expires: int, auth: bool = False, answer: str = "200", agent: str = "sipp-phone"
) -> str:
    """REGISTER, then ``answer`` (200); with ``auth`` the first gets 401 and the second carries the digest answer
    (SIPp's ``[authentication]``: run it with ``auth=(user, password)``).  ``agent``: its User-Agent."""
    s = Scenario("register")
    for cseq in (1, 2) if auth else (1,):
        credentials = "[authentication]\n" if cseq == 2 else ""
        s.send(
            f"""REGISTER sip:{domain} SIP/2.0
{VIA.format(branch="[branch]")}
From: <sip:{phone.user}@{domain}>;tag=[pid]reg[call_number]
To: <sip:{phone.user}@{domain}>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <{phone.contact}>;expires={expires}
Max-Forwards: 70
User-Agent: {agent}
{credentials}Content-Length: 0
"""
        )
        if auth and cseq == 1:
            s.recv("401", extra=' auth="true"')
    s.recv(answer)
    return s.xml()


#: The outcomes of a call that fails, by the final reply.  A proxy passes a 503 on as 500 (RFC 3261 16.7; OpenSIPS
#: unless disable_503_translation): a caller whose callee answered "unavailable" gets "server_error".
FAILED_WITH = {"busy": "486", "unavailable": "503", "server_error": "500"}


@dataclass
class Call:
    """One side's script: what it does after the call is up (or how it ends before)."""

    steps: Sequence[Step] = ()
    outcome: str = "answer"  # answer | noanswer | FAILED_WITH's; the UAC also: cancel; the UAS also: challenged
    ring_ms: int = 0
    headers: Sequence[str] = ()
    """(UAC) extra header lines of its INVITE, e.g. ``"P-Preferred-Identity: <sip:boss@127.0.0.1>"``."""
    codec: str = "PCMA"
    """The one audio codec of this side's offers and answers (CODECS), besides telephone-event."""
    events_as_offered: bool = False
    """(UAS) answer telephone-event with the payload type the offer gave it, as a phone does (else its
    SDP's fixed 101 whatever it was offered)."""
    challenges: Sequence[Tuple[int, str, bool]] = ()
    """(UAS) as a carrier asking for the account it gave the gateway: each INVITE before the one it answers gets
    a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) digest challenge in that realm (qop=auth, a nonce of
    the call's; with True, stale=true: the answer's nonce ran out), which it takes the ACK of."""


def _in_dialog_uac(s: Scenario, method: str, cseq: int, body: Optional[str] = None, extra: str = "") -> None:
    content = "Content-Type: application/sdp\nContent-Length: [len]\n\n" + body if body else "Content-Length: 0\n"
    content = (extra + "\n" if extra else "") + content
    s.send(
        f"""{method} [next_url] SIP/2.0
{VIA.format(branch="[branch]")}
From: <sip:[caller]@[domain]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
[routes]
{content}""",
        retrans=method != "ACK",
    )


def _in_dialog_uas(s: Scenario, method: str, cseq: int, body: Optional[str] = None, extra: str = "") -> None:
    content = "Content-Type: application/sdp\nContent-Length: [len]\n\n" + body if body else "Content-Length: 0\n"
    content = (extra + "\n" if extra else "") + content
    s.send(
        f"""{method} [next_url] SIP/2.0
{VIA.format(branch="[branch]")}
From:[$callee_to];tag=[pid]SIPpTag01[call_number]
To:[$caller_from]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
[routes]
{content}""",
        retrans=method != "ACK",
    )


def _reply(s: Scenario, code: str, reason: str, body: Optional[str] = None, tag: bool = True, extra: str = "") -> None:
    content = "Content-Type: application/sdp\nContent-Length: [len]\n\n" + body if body else "Content-Length: 0\n"
    content = (extra + "\n" if extra else "") + content
    to_tag = ";tag=[pid]SIPpTag01[call_number]" if tag else ""
    s.send(
        f"""SIP/2.0 {code} {reason}
[last_Via:]
[last_From:]
[last_To:]{to_tag}
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
{content}""",
        retrans=False,
    )


def _steps(s: Scenario, steps: Sequence[Step], uas: bool, cseq: int = 0) -> None:
    """``cseq``: the CSeq of this side's first in-dialog request (default: 1 for the UAS, 2 for the UAC)."""
    send = _in_dialog_uas if uas else _in_dialog_uac
    cseq = cseq or (1 if uas else 2)
    for step in steps:
        kind = step[0]
        if kind == "pause":
            s.pause(int(step[1]))  # type: ignore[misc]
        elif kind == "play":
            s.play()
        elif kind == "dtmf":  # ("dtmf", "159#")
            s.dtmf(str(step[1]))  # type: ignore[misc]
        elif kind == "reinvite":
            send(s, "INVITE", cseq, body(str(step[1])))  # type: ignore[misc]
            s.recv("100", optional=True)
            s.recv("200")
            send(s, "ACK", cseq)
            cseq += 1
        elif kind == "expect_reinvite":
            s.recv("INVITE")
            s.send(
                f"""SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{"[service]" if uas else "[caller]"}@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{body()}""",
                retrans=False,
            )
            s.recv("ACK")
        elif kind == "bye":
            send(s, "BYE", cseq, None, str(step[1]) if len(step) > 1 else "")
            s.recv("200")
            cseq += 1
        elif kind == "bye_refused":  # ("bye_refused", "480"): the BYE gets that final answer
            send(s, "BYE", cseq)
            s.recv(str(step[1]))  # type: ignore[misc]
            cseq += 1
        elif kind == "expect_bye":
            s.recv("BYE")
            _reply(s, "200", "OK", tag=False)
        else:
            raise ValueError(f"unknown step {step!r}")


def uas_scenario(call: Call) -> str:
    s = Scenario("uas")
    capture = (
        '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller_from"/>'
        '<ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee_to"/>'
    )
    sends = any(step[0] in ("bye", "reinvite") for step in call.steps)
    # SIPp refuses a variable that is set but never used.
    actions = capture if sends else ""
    answer = body(codec=call.codec)
    if call.events_as_offered:
        actions += (
            '<ereg regexp="a=rtpmap:([0-9]+) telephone-event/8000" search_in="body" check_it="true"'
            ' assign_to="te_line,te_pt"/>'
        )
        answer = answer.replace(" 101\n", " [$te_pt]\n", 1)
        answer = answer.replace("a=rtpmap:101 telephone-event/8000", "[$te_line]")
    for number, (code, realm, stale) in enumerate(call.challenges):
        s.recv("INVITE")
        header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        _reply(s, str(code), "Unauthorized" if code == 401 else "Proxy Authentication Required",
               extra=f'{header}: Digest realm="{realm}", nonce="n{number}c[call_number]x[pid]", qop="auth", '
                     "algorithm=MD5" + (", stale=true" if stale else ""))  # fmt: skip
        s.recv("ACK")
    if call.outcome == "challenged":  # its last challenge ends it: the gateway goes elsewhere
        return s.xml()
    s.recv("INVITE", extra=' rrs="true"', actions=actions)
    if call.outcome in ("busy", "unavailable"):
        _reply(s, FAILED_WITH[call.outcome], "Busy Here" if call.outcome == "busy" else "Service Unavailable")
        s.recv("ACK")
        return s.xml()
    _reply(s, "180", "Ringing")
    if call.outcome == "noanswer":
        s.recv("CANCEL")
        s.send(
            """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
""",
            retrans=False,
        )
        s.send(
            """SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0
""",
            retrans=False,
        )
        s.recv("ACK")
        return s.xml()
    if call.ring_ms:
        s.pause(call.ring_ms)
    _reply(s, "200", "OK", answer)
    s.recv("ACK")
    _steps(s, call.steps, uas=True)
    return s.xml()


def uac_scenario(call: Call, auth: bool = False) -> str:
    """The caller's side.  With ``auth`` its first INVITE gets 407 (ACKed) and the second carries the
    digest answer (SIPp's ``[authentication]``: run it with ``auth=(user, password)``)."""
    s = Scenario("uac")
    extra = "".join(f"{line}\n" for line in call.headers)
    for cseq in (1, 2) if auth else (1,):
        credentials = "[authentication]\n" if cseq == 2 else ""
        s.invite_at = s.index
        s.send(
            f"""INVITE sip:[service]@[domain] SIP/2.0
{VIA.format(branch="[branch]")}
From: <sip:[caller]@[domain]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[domain]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
{extra}{credentials}Content-Type: application/sdp
Content-Length: [len]

{body(codec=call.codec)}"""
        )
        if auth and cseq == 1:
            s.recv("100", optional=True)
            s.recv("407", extra=' auth="true"')
            _ack_negative(s, cseq)
    invite_cseq = 2 if auth else 1
    s.recv("100", optional=True)
    if call.outcome == "noanswer":
        # nobody answers: OpenSIPS's fr_inv_timeout ends the call with 408 (and CANCELs the callee)
        s.recv("180")
        s.recv("408")
        _ack_negative(s, invite_cseq)
        return s.xml()
    if call.outcome == "cancel":
        s.recv("180")
        if call.ring_ms:
            s.pause(call.ring_ms)
        cancel_branch = s.branch_of_invite()
        s.send(
            f"""CANCEL sip:[service]@[domain] SIP/2.0
{VIA.format(branch=cancel_branch)}
From: <sip:[caller]@[domain]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[domain]>
Call-ID: [call_id]
CSeq: {invite_cseq} CANCEL
Max-Forwards: 70
Content-Length: 0
"""
        )
        s.recv("200")
        s.recv("487")
        _ack_negative(s, invite_cseq)
        return s.xml()
    if call.outcome in FAILED_WITH:
        s.recv("180", optional=True)
        s.recv(FAILED_WITH[call.outcome])
        _ack_negative(s, invite_cseq)
        return s.xml()
    s.recv("180", optional=True)
    s.recv("183", optional=True)
    s.recv("200", extra=' rrs="true"')
    _in_dialog_uac(s, "ACK", invite_cseq)
    s.play()
    _steps(s, call.steps, uas=False, cseq=invite_cseq + 1)
    return s.xml()


def _ack_negative(s: Scenario, cseq: int = 1) -> None:
    s.send(
        f"""ACK sip:[service]@[domain] SIP/2.0
{VIA.format(branch=s.branch_of_invite())}
From: <sip:[caller]@[domain]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[domain]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
""",
        retrans=False,
    )


@dataclass
class Run:
    """A SIPp process; ``wait()`` gives its exit code (0: every call as scripted)."""

    process: subprocess.Popen[bytes]
    folder: Path
    name: str
    timeout: float

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=3)

    def errors(self) -> str:
        texts = []
        for path in sorted(self.folder.glob(f"{self.name}*")):
            if path.suffix in (".log", ".out"):
                texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)


def run(
    xml: str,
    folder: Path,
    name: str,
    phone: Phone,
    proxy: Tuple[str, int],
    service: str = "",
    caller: str = "",
    domain: str = "127.0.0.1",
    echo: bool = False,
    timeout: float = 40.0,
    call_id: str = "",
    auth: Optional[Tuple[str, str]] = None,
    calls: int = 1,
    rate: int = 0,
) -> Run:
    """``calls``: how many calls this run places or answers (at most that many at once); ``rate``: the
    UAC's new calls per second (SIPp's default, 10, when 0)."""
    scenario = folder / f"{name}.xml"
    scenario.write_text(xml)
    command = [
        *netns.command(phone.namespace, ["sipp"]), f"{proxy[0]}:{proxy[1]}", "-sf", str(scenario),
        "-t", phone.sipp_transport,
        "-i", phone.host, "-p", str(phone.port), "-mi", phone.host, "-mp", str(phone.media_port),
        "-m", str(calls), "-l", str(calls), "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error",
        "-recv_timeout", "20000", "-max_recv_loops", "100",
        # With several UDP workers OpenSIPS can relay a 180 after the 200 it raced (docs/host-facts.md): a
        # scenario past its 200 would abort the call on that stray 180.  An unexpected message is
        # ignored instead; a real failure still fails the scenario (the message it waits for never comes).
        "-default_behaviors", "all,-abortunexp",
        "-key", "caller", caller or phone.user, "-key", "domain", domain,
        "-trace_err", "-error_file", str(folder / f"{name}.errors.log"),
        "-trace_msg", "-message_file", str(folder / f"{name}.messages.log"),
    ]  # fmt: skip
    if service:
        command += ["-s", service]
    if auth is not None:  # user and password for [authentication] after a recv with auth="true"
        command += ["-au", auth[0], "-ap", auth[1]]
    if call_id:  # the whole Call-ID (SIPp's default is "%u-%p@%s")
        command += ["-cid_str", call_id.replace("%", "%%")]
    if echo:
        command.append("-rtp_echo")
    if rate:
        command += ["-r", str(rate)]
    with open(folder / f"{name}.out", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Run(process, folder, name, timeout + 10)


def register(
    phone: Phone,
    folder: Path,
    proxy: Tuple[str, int],
    domain: str = "127.0.0.1",
    expires: int = 600,
    password: str = "",
    answer: str = "200",
    agent: str = "sipp-phone",
) -> Run:
    """Register ``phone``; with a ``password`` it answers the gateway's digest challenge.  The run fails unless
    the last answer is ``answer``; ``agent``: its User-Agent."""
    name = f"register-{phone.user}-{phone.port}-{int(time.monotonic() * 1000)}"
    xml = register_scenario(phone, domain, expires, auth=bool(password), answer=answer, agent=agent)
    auth = (phone.user, password) if password else None
    return run(xml, folder, name, phone, proxy, domain=domain, timeout=15, auth=auth)

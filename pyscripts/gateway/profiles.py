"""The rtpengine flag profiles: one table, read top to bottom.

A row says which flags rtpengine gets when SDP travels from one kind of leg to
another at one step.  The key is the SDP's own path, not the call's: in a
browser->phone call the offer uses ``web->sip offer`` and the phone's answer
``sip->web answer``.  Re-INVITEs and UPDATEs use the ``reoffer`` row of the
way their SDP travels, and their answers the ``answer`` row back.

Why the flags (docs/host-facts.md, rtpengine 10.5 as Debian ships it):
- Browser-bound SDP is always ``UDP/TLS/RTP/SAVPF`` with ``ICE=force``,
  ``rtcp-mux-require`` (browsers insist on mux) and ``SDES-off`` (Chrome
  rejects crypto lines next to DTLS).  Answers to a browser carry no
  ``DTLS=passive``: with Debian's rtpengine 10.5 it writes a=setup:passive yet
  rtpengine still sends the ClientHello itself, both ends act as DTLS client
  and no audio flows (seen with Chromium 156 against OpenSIPS 3.6.8/4.0.1).
  Without it rtpengine answers a=setup:active and opens DTLS, which works.
- SIP-bound SDP is ``RTP/AVP`` with ``ICE=remove DTLS=off rtcp-mux-demux``.
- ``transcode-PCMU transcode-PCMA transcode-G722`` on offers toward SIP make
  sure a phone sees a codec it knows even when a browser offered only Opus
  (offers only: rtpengine ignores codec flags on answers).
- ``transcode-opus`` on offers toward a browser: a browser that takes only Opus
  still answers a G.711 or G.722 phone.  rtpengine lists Opus after the phone's
  own codecs, and a browser that has the phone's codec answers with it first:
  the audio then passes through untranscoded (tests/e2e/test_media.py reads the
  payload type the browser gets).
- ``inject-DTMF`` on every offer and answer between a browser and a SIP leg:
  browsers (JsSIP, SIP.js) send DTMF as SIP INFO by default, phones and PBXs
  expect RFC 4733 events in RTP.  The router answers such an INFO itself and
  has rtpengine play the digit into the media ("play DTMF"), which rtpengine
  10.5 does only for audio it decodes: with the flag it decodes and re-encodes
  these calls even with a codec in common (its statistics count them as
  transcoded; the payload type stays).  ``[media] info_dtmf = relay`` in
  gateway.ini drops the flag: common codecs pass through untouched and INFO
  goes on as INFO.
- ``port-latching`` on re-offers from a browser: an ICE restart (new ufrag and
  pwd, and new browser ports) made rtpengine 10.5 move to new ports of its own
  toward the other side too, so the SIP phone's re-INVITE named a new port; with
  it the other side sees the same address and port (tests/e2e/test_media.py).
- ``ICE-lite=both`` on re-offers between browsers: rtpengine answers the
  connectivity checks of a new m-line as an ICE-lite agent, so the browser
  controls.  Without it video added by the browser that answered the call
  reached the other browser in 2 of 5 runs (rtpengine 10.5 took no check on
  the new stream: ICE roles, the answerer being the controlled agent); with it
  in every run.  Likewise ``ICE-lite=forward`` on re-offers from a SIP leg to
  a browser: a SIP video phone turning its video back on (a new m-line, which
  JsSIP answers before gathering candidates) reached the browser in 8 of 8 runs,
  2 of 3 without.  Not on initial offers: there it broke an IPv6 browser
  calling an IPv4 one (tests/e2e/test_media.py).
- ``replace-origin`` hides the far end's o= line.  ``replace-session-connection``
  is gone: rtpengine ignores it since mr12.5 and rejects it since mr26.1.
- ``delete`` rows are empty: a delete without flags removes the whole call.

Sites override rows in gateway.ini (``[profiles]``, e.g. ``web->sip offer = ...``);
``validate`` refuses an override that would break the rules above.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, Mapping, Tuple

from .model import Leg, MediaAction, Step

ProfileKey = Tuple[Leg, Leg, Step]

TO_WEB = "UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require SDES-off replace-origin"
TO_SIP = "RTP/AVP ICE=remove DTLS=off rtcp-mux-demux replace-origin"
PHONE_CODECS = "transcode-PCMU transcode-PCMA transcode-G722"

#: (SDP from, SDP to, step) -> rtpengine flags.
DEFAULT_PROFILES: Dict[ProfileKey, str] = {
    (Leg.WEB, Leg.WEB, Step.OFFER): TO_WEB,
    (Leg.WEB, Leg.WEB, Step.ANSWER): TO_WEB,
    (Leg.WEB, Leg.WEB, Step.REOFFER): TO_WEB + " port-latching ICE-lite=both",
    (Leg.WEB, Leg.WEB, Step.DELETE): "",
    (Leg.WEB, Leg.SIP, Step.OFFER): f"{TO_SIP} {PHONE_CODECS} inject-DTMF",
    (Leg.WEB, Leg.SIP, Step.ANSWER): TO_SIP + " inject-DTMF",
    (Leg.WEB, Leg.SIP, Step.REOFFER): f"{TO_SIP} {PHONE_CODECS} port-latching inject-DTMF",
    (Leg.WEB, Leg.SIP, Step.DELETE): "",
    (Leg.SIP, Leg.WEB, Step.OFFER): TO_WEB + " transcode-opus inject-DTMF",
    (Leg.SIP, Leg.WEB, Step.ANSWER): TO_WEB + " inject-DTMF",
    (Leg.SIP, Leg.WEB, Step.REOFFER): TO_WEB + " transcode-opus inject-DTMF ICE-lite=forward",
    (Leg.SIP, Leg.WEB, Step.DELETE): "",
    (Leg.SIP, Leg.SIP, Step.OFFER): TO_SIP,
    (Leg.SIP, Leg.SIP, Step.ANSWER): TO_SIP,
    (Leg.SIP, Leg.SIP, Step.REOFFER): TO_SIP,
    (Leg.SIP, Leg.SIP, Step.DELETE): "",
}

#: rtpengine decodes and re-encodes the audio of an exchange whose offer and answer both carry it, so that
#: it can play DTMF into it ("play DTMF"): a browser's SIP INFO digit reaches a SIP leg as RFC 4733 events.
INJECT_DTMF = "inject-DTMF"
#: The rows of the SDP between a browser and a SIP leg, each exchange's offer and answer: with the flag in
#: every one the router plays a browser's INFO digits into the media (core.info_to_rfc4733).
INJECT_ROWS = tuple((a, b, step) for a, b in ((Leg.WEB, Leg.SIP), (Leg.SIP, Leg.WEB))
                    for step in (Step.OFFER, Step.ANSWER, Step.REOFFER))  # fmt: skip

#: Added when the SDP comes from a SIP leg whose addresses cannot be trusted
#: (NATed, or private addresses in the SDP): rtpengine learns the address from
#: the packets' source instead (what the reference configs use; trust-address is
#: rtpengine's default and needs no flag).
UNTRUSTED_SIP_SOURCE = "SIP-source-address"

# Flags rtpengine no longer honours or that contradict a browser/SIP leg.
_DEAD = {"replace-session-connection", "trust-address-no", "UDP/TLS/RTP/SAVP", "RTP/SAVPF"}
#: Flags that choose rtpengine's interfaces: the router's alone (core.media_action, from [interfaces]).
_INTERFACE_FLAGS = {"direction", "in-iface", "out-iface", "internal", "external", "address-family"}
_WEB_MUST = ("UDP/TLS/RTP/SAVPF", "ICE=force", "rtcp-mux-require", "SDES-off")
_WEB_MUST_NOT = ("RTP/AVP", "ICE=remove", "DTLS=off", "rtcp-mux-demux")
_SIP_MUST = ("RTP/AVP", "ICE=remove", "DTLS=off")
_SIP_MUST_NOT = ("UDP/TLS/RTP/SAVPF", "ICE=force", "rtcp-mux-require", "DTLS=passive", "DTLS=active")
#: rtpengine's words for DTLS=off (its DTLS option takes "no", "off", "disable" and "disabled" alike).
_DTLS_OFF = frozenset({"off", "no", "disable", "disabled"})
_OFFER_ONLY_PREFIXES = ("transcode-", "codec-transcode-", "codec-strip-", "codec-mask-", "codec-offer-")


def tokens(flags: str) -> list[str]:
    return flags.split()


def problems(key: ProfileKey, flags: str) -> list[str]:
    """Why a row's flags would break a leg, empty when they are fine."""
    _source, target, step = key
    words = tokens(flags)
    found = []
    if step is Step.DELETE:
        return [f"unexpected {w}" for w in words if not w.startswith(("delete-delay=", "via-branch"))]
    for word in words:
        if word in _DEAD:
            found.append(f"{word} is ignored or rejected by today's rtpengine")
    must, must_not = (_WEB_MUST, _WEB_MUST_NOT) if target is Leg.WEB else (_SIP_MUST, _SIP_MUST_NOT)
    found += [f"{target.value}-bound SDP needs {w}" for w in must if w not in words]
    found += [f"{target.value}-bound SDP must not have {w}" for w in must_not if w in words]
    if target is Leg.WEB:  # DTLS=off's other spellings (DTLS=off itself is in _WEB_MUST_NOT)
        found += [f"{target.value}-bound SDP must not have {w}: it turns DTLS off" for w in words
                  if w.partition("=")[0].upper() == "DTLS" and w.partition("=")[2].lower() in _DTLS_OFF
                  and w != "DTLS=off"]  # fmt: skip
    protocols = [w for w in words if "RTP/" in w]
    if len(protocols) > 1:
        found.append("more than one transport protocol: " + " ".join(protocols))
    ice = [w for w in words if w.startswith("ICE=")]
    if len(ice) > 1:
        found.append("contradicting ICE flags: " + " ".join(ice))
    dtls = [w for w in words if w.startswith("DTLS=")]
    if len(dtls) > 1:
        found.append("contradicting DTLS flags: " + " ".join(dtls))
    if step is Step.ANSWER:
        found += [f"{w} acts on offers only" for w in words if w.startswith(_OFFER_ONLY_PREFIXES)]
    found += [f"{w}: the router names each leg's interface (gateway.ini [interfaces]) and address family"
              for w in words if w.split("=")[0] in _INTERFACE_FLAGS]  # fmt: skip
    if "via-branch" in flags:
        found.append("via-branch is added per branch by the router, not by a profile")
    return found


class Profiles(Mapping[ProfileKey, str]):
    """The effective table: the defaults with the site's overrides, validated."""

    def __init__(self, overrides: Mapping[ProfileKey, str] | None = None, info_dtmf: bool = True) -> None:
        """``info_dtmf`` False (gateway.ini ``[media] info_dtmf = relay``): no row carries inject-DTMF, the
        audio a browser and a phone have in common passes through rtpengine untouched, and a browser's SIP
        INFO goes on as INFO."""
        table = dict(DEFAULT_PROFILES)
        table.update(overrides or {})
        if not info_dtmf:
            table = {k: " ".join(w for w in tokens(v) if w != INJECT_DTMF) for k, v in table.items()}
        errors = [f"{format_key(k)}: {p}" for k, v in table.items() for p in problems(k, v)]
        if errors:
            raise ValueError("bad rtpengine profile: " + "; ".join(errors))
        self._table = {k: " ".join(tokens(v)) for k, v in table.items()}
        self.actions: Dict[Tuple[object, ...], MediaAction] = {}
        """core.media_action's results for this table, by their complete inputs, made once each."""
        self.checked: Dict[Tuple[object, ...], Tuple[str, ...]] = {}
        """core.check_decision's findings for added flags, by their complete inputs."""

    @property
    def plays_info_dtmf(self) -> bool:
        """Every exchange between a browser and a SIP leg lets rtpengine play DTMF (INJECT_ROWS)."""
        return all(INJECT_DTMF in tokens(self._table[key]) for key in INJECT_ROWS)

    def __getitem__(self, key: ProfileKey) -> str:
        return self._table[key]

    def __iter__(self) -> Iterator[ProfileKey]:
        return iter(DEFAULT_PROFILES)

    def __len__(self) -> int:
        return len(self._table)


def format_key(key: ProfileKey) -> str:
    return f"{key[0].value}->{key[1].value} {key[2].value}"


def parse_key(text: str) -> ProfileKey:
    """``"web->sip offer"`` -> (Leg.WEB, Leg.SIP, Step.OFFER); ValueError otherwise."""
    try:
        path, step = text.split()
        source, target = path.split("->")
        return Leg(source), Leg(target), Step(step)
    except ValueError:
        raise ValueError(f"bad profile name {text!r}: expected e.g. 'web->sip offer'") from None


def render(profiles: Mapping[ProfileKey, str], keys: Iterable[ProfileKey] | None = None) -> str:
    lines = [f"{'sdp path':<10} {'step':<8} rtpengine flags"]
    for key in keys or profiles:
        lines.append(f"{key[0].value + '->' + key[1].value:<10} {key[2].value:<8} {profiles[key] or '(none)'}")
    return "\n".join(lines)

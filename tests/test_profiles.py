"""The rtpengine flag table: every cell checked against the rules a leg needs (h2-style, over the whole table)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import media_action
from gateway.model import Leg, Party, Step
from gateway.profiles import DEFAULT_PROFILES, Profiles, format_key, parse_key, problems, render
from gateway.settings import parse

KEYS = sorted(DEFAULT_PROFILES, key=format_key)
OFFER_ANSWER = [Step.OFFER, Step.ANSWER, Step.REOFFER]


def test_the_table_has_every_direction_and_step() -> None:
    assert set(DEFAULT_PROFILES) == {(a, b, s) for a in Leg for b in Leg for s in Step}


@given(st.sampled_from(KEYS), st.booleans(), st.booleans(), st.one_of(st.none(), st.integers(0, 12)))
def test_every_cell_gives_the_receiving_leg_what_it_needs(key, behind_nat, private_sdp, branch) -> None:  # type: ignore[no-untyped-def]
    source, target, step = key
    action = media_action(Profiles(), step, Party(source, behind_nat), target, private_sdp, branch)
    words = action.flags.split()
    assert len(words) == len(set(words)), "a flag given twice"
    if step is Step.DELETE:
        assert [w for w in words if not w.startswith("via-branch-param=")] == []
        return
    if target is Leg.WEB:
        # Browser-bound: DTLS-SRTP with ICE and rtcp-mux, never SDES crypto (docs/host-facts.md).
        assert {"UDP/TLS/RTP/SAVPF", "ICE=force", "rtcp-mux-require", "SDES-off"} <= set(words)
        assert not {"RTP/AVP", "ICE=remove", "DTLS=off", "rtcp-mux-demux"} & set(words)
    else:
        assert {"RTP/AVP", "ICE=remove", "DTLS=off"} <= set(words)
        assert not {"UDP/TLS/RTP/SAVPF", "ICE=force", "rtcp-mux-require"} & set(words)
        assert not [w for w in words if w.startswith("DTLS=") and w != "DTLS=off"]
    assert len([w for w in words if "RTP/" in w]) == 1
    assert len([w for w in words if w.startswith("ICE=")]) == 1
    assert len([w for w in words if w.startswith("DTLS=")]) <= 1
    assert "replace-session-connection" not in words
    assert not [w for w in words if w.startswith("via-branch=")], "via-branch=auto fails in OpenSIPS 3.6/4.0"
    untrusted = source is Leg.SIP and (behind_nat or private_sdp)
    assert ("SIP-source-address" in words) == untrusted
    if step is Step.ANSWER:
        assert not [w for w in words if w.startswith(("transcode-", "codec-"))], "codec flags act on offers only"


@given(st.sampled_from(list(Leg)), st.sampled_from(list(Leg)))
def test_an_answer_uses_the_row_of_the_way_back(caller: Leg, callee: Leg) -> None:
    """The answer to an offer caller->callee is shaped for the caller."""
    table = Profiles()
    answer = table[(callee, caller, Step.ANSWER)].split()
    offer = table[(caller, callee, Step.OFFER)].split()
    shape = {Leg.WEB: "UDP/TLS/RTP/SAVPF", Leg.SIP: "RTP/AVP"}
    assert shape[caller] in answer and shape[callee] in offer


def test_browser_offers_reach_phones_with_a_codec_they_know() -> None:
    """Opus-only browsers and PCMU-, PCMA- or G.722-only phones: each offer and re-offer toward a phone names
    all three, each toward a browser names Opus (tests/e2e/test_media.py runs the pairs)."""
    for step in (Step.OFFER, Step.REOFFER):
        assert {"transcode-PCMU", "transcode-PCMA", "transcode-G722"} <= set(
            DEFAULT_PROFILES[(Leg.WEB, Leg.SIP, step)].split()
        )
        assert "transcode-opus" in DEFAULT_PROFILES[(Leg.SIP, Leg.WEB, step)].split()


def test_no_dtls_role_is_forced_toward_browsers() -> None:
    """With DTLS=passive rtpengine 10.5 writes a=setup:passive yet sends the ClientHello itself, and
    the real browser calls got no audio (tests/e2e); left alone it answers active and audio flows."""
    for source in Leg:
        for step in (Step.OFFER, Step.ANSWER, Step.REOFFER):
            assert not [w for w in DEFAULT_PROFILES[(source, Leg.WEB, step)].split() if w.startswith("DTLS=")]


@pytest.mark.parametrize(
    ("row", "flags", "complaint"),
    [
        ("web->sip offer", "RTP/AVP ICE=remove DTLS=off replace-session-connection", "ignored or rejected"),
        ("sip->web offer", "RTP/AVP ICE=remove DTLS=off", "web-bound SDP needs UDP/TLS/RTP/SAVPF"),
        (
            "web->web answer",
            "UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require SDES-off ICE=remove",
            "must not have ICE=remove",
        ),
        ("sip->sip answer", "RTP/AVP ICE=remove DTLS=off transcode-PCMU", "acts on offers only"),
        ("sip->sip offer", "RTP/AVP ICE=remove DTLS=off via-branch=auto", "via-branch"),
        ("web->sip delete", "RTP/AVP", "unexpected RTP/AVP"),
    ],
)
def test_a_broken_override_is_refused_with_the_reason(row: str, flags: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Profiles({parse_key(row): flags})


def test_a_good_override_replaces_its_row_only() -> None:
    key = parse_key("web->sip offer")
    flags = "RTP/AVP ICE=remove DTLS=off rtcp-mux-demux transcode-PCMA"
    table = Profiles({key: flags})
    assert table[key] == flags
    assert all(table[k] == " ".join(v.split()) for k, v in DEFAULT_PROFILES.items() if k != key)


def test_the_default_table_breaks_no_rule() -> None:
    assert {format_key(k): problems(k, v) for k, v in DEFAULT_PROFILES.items() if problems(k, v)} == {}


@pytest.mark.parametrize("name", ["web->sip", "web-sip offer", "web->pstn offer", "web->sip hangup", ""])
def test_profile_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="bad profile name"):
        parse_key(name)


def test_the_table_prints_one_row_per_cell() -> None:
    text = render(Profiles())
    assert len(text.splitlines()) == 1 + len(DEFAULT_PROFILES)
    assert "sip->web   answer   UDP/TLS/RTP/SAVPF" in text


def test_site_settings_override_a_row() -> None:
    settings = parse("[profiles]\nweb->sip offer = RTP/AVP ICE=remove DTLS=off transcode-PCMA\n")
    assert settings.profiles[(Leg.WEB, Leg.SIP, Step.OFFER)].endswith("transcode-PCMA")


def test_site_settings_refuse_a_broken_row() -> None:
    with pytest.raises(ValueError, match="sip-bound SDP needs RTP/AVP"):
        parse("[profiles]\nweb->sip offer = UDP/TLS/RTP/SAVPF ICE=force\n")


def test_the_address_family_is_the_router_s_not_a_profile_s() -> None:
    """The router names IP6 toward a contact that registered over IPv6 (core.media_action); a row that fixed
    one family would send IPv6 addresses to IPv4 phones, or the reverse."""
    key = (Leg.SIP, Leg.WEB, Step.OFFER)
    with pytest.raises(ValueError, match="address-family"):
        Profiles({key: DEFAULT_PROFILES[key] + " address-family=IP6"})

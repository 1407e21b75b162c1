"""Failed branches and rtpengine deletes, in the decision core (no host, no rtpengine).

OpenSIPS's rtpengine_delete sends no from-tag, and rtpengine then deletes the
whole call whatever via-branch says (tests/test_sdp_truth.py shows it on the
real one).  So a failed branch deletes only when no other branch still has media.
"""

from __future__ import annotations

from gateway import core
from gateway.model import CallRecord, Leg, MediaAction, Party, Registration, Step
from gateway.profiles import Profiles

PROFILES = Profiles()
CALLER = Party(Leg.SIP, False)


def _forked() -> CallRecord:
    record = CallRecord(CALLER, early_offer=True, private_sdp=False)
    for index, registration in enumerate((Registration.WEBRTC, Registration.NATED_SIP)):
        record = core.plan_branch(record, index, registration, PROFILES).record
    return record


def test_a_failed_branch_keeps_the_session_while_another_branch_has_media() -> None:
    plan = core.plan_initial_reply(_forked(), 0, 486, False, PROFILES)
    assert plan.action is None
    assert plan.record is not None and plan.record.media_open


def test_the_last_failed_branch_deletes_the_whole_call_once() -> None:
    first = core.plan_initial_reply(_forked(), 0, 486, False, PROFILES).record
    assert first is not None
    last = core.plan_initial_reply(first, 1, 480, False, PROFILES)
    assert last.action == MediaAction(Step.DELETE, "")
    assert last.record is not None and not last.record.media_open
    assert core.plan_failure(last.record, PROFILES) is None  # nothing left for the failure route
    assert core.plan_initial_reply(last.record, 1, 480, False, PROFILES).action is None  # retransmission


def test_a_branch_cancelled_after_another_answered_deletes_nothing() -> None:
    answered = core.plan_initial_reply(_forked(), 1, 200, True, PROFILES).record
    assert answered is not None
    plan = core.plan_initial_reply(answered, 0, 487, False, PROFILES)
    assert plan.action is None
    assert plan.record is not None and plan.record.media_open

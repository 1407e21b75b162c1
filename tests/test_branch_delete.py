"""Failed branches and rtpengine deletes, in the decision core (no host, no rtpengine).

OpenSIPS's rtpengine_delete sends no from-tag, and rtpengine then deletes the
whole call whatever via-branch says (tests/test_sdp_truth.py and the real
OpenSIPS suite show it).  So no branch deletes on its own: when every branch
failed the failure route deletes the call once; after an answer the BYE does.
"""

from __future__ import annotations

from gateway import core
from gateway.model import CallRecord, Leg, MediaAction, Party, Registration, Step
from gateway.profiles import Profiles

PROFILES = Profiles()
CALLER = Party(Leg.SIP, False)


def _forked(early_offer: bool = True) -> CallRecord:
    record = CallRecord(CALLER, early_offer=early_offer, private_sdp=False)
    for index, registration in enumerate((Registration.WEBRTC, Registration.NATED_SIP)):
        record = core.plan_branch(record, index, registration, PROFILES).record
    return record


def test_a_failed_branch_deletes_nothing() -> None:
    plan = core.plan_initial_reply(_forked(), 0, 486, False, PROFILES)
    assert (plan.action, plan.record) == (None, None)


def test_when_every_branch_failed_the_failure_route_deletes_the_call_once() -> None:
    record = _forked()
    for index, status in ((0, 486), (1, 480)):
        assert core.plan_initial_reply(record, index, status, False, PROFILES).action is None
    assert core.plan_failure(record, PROFILES) == MediaAction(Step.DELETE, "")


def test_a_branch_cancelled_after_another_answered_deletes_nothing() -> None:
    answered = core.plan_initial_reply(_forked(), 1, 200, True, PROFILES).record
    assert answered is not None
    plan = core.plan_initial_reply(answered, 0, 487, False, PROFILES)
    assert plan.action is None and plan.record is None


def test_a_late_offer_call_that_failed_before_any_offer_has_nothing_to_delete() -> None:
    record = _forked(early_offer=False)
    assert not record.media_open
    assert core.plan_failure(record, PROFILES) is None


def test_a_late_offer_in_early_media_opens_a_session_the_failure_route_deletes() -> None:
    ringing = core.plan_initial_reply(_forked(early_offer=False), 0, 183, True, PROFILES)
    assert ringing.action is not None and ringing.action.step is Step.OFFER
    assert ringing.record is not None and ringing.record.media_open and ringing.record.answered is None
    assert core.plan_failure(ringing.record, PROFILES) == MediaAction(Step.DELETE, "")

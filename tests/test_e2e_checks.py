"""The e2e suite's media check (tests/e2e/sipcalls.media_both_ways) fails when it should, offline.

It judges a call by the ng commands the relay recorded: the caller's leg is the first offer's From
tag, the callee's the first answer's To tag, and rtpengine's query just before the delete must
count more than the minimum of packets from each.  Missing counters are a failure, not a pass.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from rig.ng import Exchange
from tests.e2e.sipcalls import media_both_ways

CALL = "c1@127.0.0.1"


def query(counts: Dict[str, int]) -> Dict[str, Any]:
    """A query answer as rtpengine gives it: per tag, medias, streams, stats."""
    return {
        "result": "ok",
        "tags": {
            tag: {"medias": [{"streams": [{"stats": {"packets": n // 2}}, {"stats": {"packets": n - n // 2}}]}]}
            for tag, n in counts.items()
        },
    }


def exchanges(final: Optional[Dict[str, Any]], delete: bool = True) -> List[Exchange]:
    made = [
        Exchange({"command": "offer", "call-id": CALL, "from-tag": "caller"}),
        Exchange({"command": "answer", "call-id": CALL, "from-tag": "caller", "to-tag": "callee"}),
        Exchange({"command": "offer", "call-id": "other@127.0.0.1", "from-tag": "x"}),  # another call
    ]
    if delete:
        made.append(Exchange({"command": "delete", "call-id": CALL, "from-tag": "caller"}, final_query=final))
    return made


def test_both_legs_over_the_minimum_pass() -> None:
    assert media_both_ways(exchanges(query({"caller": 50, "callee": 48})), CALL) == {"caller": 50, "callee": 48}


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        (exchanges(query({})), "no counters for the caller leg"),  # what all(...) on {} let pass
        (exchanges({"result": "ok"}), "no counters for the caller leg"),
        (exchanges(query({"caller": 50})), "no counters for the callee leg"),
        (exchanges(query({"caller": 50, "callee": 20})), "20 packets from the callee leg"),
        (exchanges(query({"caller": 0, "callee": 90, "stray": 90})), "0 packets from the caller leg"),
        (exchanges(None), "did not answer the query before the delete"),
        (exchanges(query({"caller": 50, "callee": 48}), delete=False), "no delete for"),
        (exchanges(query({"caller": 50, "callee": 48}))[::2], "no offer and answer"),
    ],
    ids=["empty", "no-tags", "one-leg", "at-the-minimum", "silent-caller", "no-query", "no-delete", "no-answer"],
)
def test_missing_or_thin_counters_fail(commands: List[Exchange], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        media_both_ways(commands, CALL)

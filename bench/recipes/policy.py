"""The benchmark's policy.py with the README's recipes at once (python3 -m bench.run --rules recipes).

- docs/recipes/headers as it is: a header by the caller's kind on every relayed request, and
  P-Preferred-Identity taken away (bench/sipp/uac-rules.xml sends one; the callees check both);
- docs/recipes/rtpengine-flags for the calls the dial plan sends to the international trunk, with a
  flag that costs nothing in OpenSIPS and changes nothing for the call: ``loop-protect`` (rtpengine
  marks the SDP it wrote with ``a=rtpengine:<id>`` so that it would not rewrite it twice; the
  callees count the offers that carry the mark).  record-call=yes and transcode-PCMA of the recipe
  would make rtpengine record or transcode: work of rtpengine's, not OpenSIPS's, on the same machine.

gateway.ini's tables (bench/recipes/gateway.ini) come first: blocked numbers never reach this file.
bench/recipes/native-policy.cfg is this file written natively, for bench/native.cfg.
"""

from gateway.policy import Decision, Kind, Request

#: rtpengine flags for offers toward the international trunk (a SIP party).
FLAGS = "loop-protect"


def route(request: Request, default: Decision) -> Decision:
    kind = "webrtc" if request.caller is Kind.BROWSER else "sip"
    decision = default.with_header("X-Caller-Kind", kind).without_header("P-Preferred-Identity")
    if default.target == "trunk" and default.trunk == "international":
        decision = decision.with_rtpengine(FLAGS, toward=Kind.SIP)
    return decision

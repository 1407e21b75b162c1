"""The benchmark's native reference takes the decisions the Python router takes (what can be checked offline)."""

from __future__ import annotations

import pathlib
import re

from bench.run import SippStats, with_mpath
from gateway import core
from gateway.profiles import DEFAULT_PROFILES, UNTRUSTED_SIP_SOURCE

ROOT = pathlib.Path(__file__).resolve().parent.parent
NATIVE = (ROOT / "bench" / "native.cfg").read_text()
PYTHON = (ROOT / "opensips" / "opensips.cfg").read_text()


def test_native_uses_every_flag_string_of_the_profile_table() -> None:
    strings = set(re.findall(r'\$var\(flags\) = "([^"]+)"', NATIVE))
    assert {flags for flags in DEFAULT_PROFILES.values() if flags} == strings


def test_native_adds_what_the_router_adds_to_the_profile() -> None:
    assert f'" {UNTRUSTED_SIP_SOURCE}"' in NATIVE
    assert '" via-branch-param=br" + $T_branch_idx' in NATIVE
    assert 'rtpengine_delete("via-branch-param=br$var(idx)")' in NATIVE


def test_native_runs_the_same_nat_test_and_flags() -> None:
    assert f'nat_uac_test("{core.NAT_TESTS}")' in NATIVE
    for flag in ("SRC_WS", "SRC_NAT"):
        assert f'setflag("{flag}")' in NATIVE
    for flag in ("WEBRTC", "NATED"):
        assert f'setbflag("{flag}")' in NATIVE


def test_native_loads_the_same_modules_minus_python() -> None:
    modules = set(re.findall(r'^loadmodule "(\w+)\.so"', PYTHON, re.M))
    assert set(re.findall(r'^loadmodule "(\w+)\.so"', NATIVE, re.M)) == modules - {"python"}


def test_mpath_goes_on_the_first_line() -> None:
    text = with_mpath("#\n# cfg\nlog_level = 3\n", "/opt/x/modules/")
    assert text.splitlines()[0] == 'mpath = "/opt/x/modules/" #'
    assert len(text.splitlines()) == 3


def test_sipp_statistics_are_read_from_the_last_line(tmp_path: pathlib.Path) -> None:
    stat = tmp_path / "s.csv"
    stat.write_text(
        "TotalCallCreated;SuccessfulCall(C);FailedCall(C);Retransmissions(C);CallRate(C);\n"
        "5;4;1;0;2.5;\n"
        "10;9;1;3;5.0;\n"
    )
    assert SippStats.read(stat) == SippStats(10, 9, 1, 3, 5.0)
    assert SippStats.read(tmp_path / "missing.csv") == SippStats(0, 0, 0, 0, 0.0)


def test_native_sets_the_same_module_parameters_minus_python() -> None:
    def params(text: str) -> set[str]:
        return {line for line in re.findall(r"^modparam\(.*\)$", text, re.M) if '"python"' not in line}

    assert params(NATIVE) == params(PYTHON)

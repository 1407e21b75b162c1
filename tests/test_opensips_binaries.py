"""Which OpenSIPS the end-to-end suite runs against (rig.gateway.find_opensips), offline.

OPENSIPS_BIN names one binary or several (':'); each part must be an executable file, and one that is
not is reported with its path and why, never passed over: a typo must not make the suite skip.  Unset
(or empty), `opensips` on PATH is used; with none there, the suite skips with one reason.  The last
tests run pytest on a small part of tests/e2e to show what a user sees in each case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from rig.gateway import REPO, find_opensips, opensips_binaries


def executable(path: Path) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_every_named_executable_in_order(tmp_path: Path) -> None:
    a, b = executable(tmp_path / "a"), executable(tmp_path / "b")
    found = find_opensips({"OPENSIPS_BIN": f"{b}:{a}", "PATH": ""})
    assert (found.found, found.problems, found.named) == ([b, a], [], f"{b}:{a}")
    assert find_opensips({"OPENSIPS_BIN": f":{a}::{b}:"}).found == [a, b]  # empty parts are no paths
    assert find_opensips({"OPENSIPS_BIN": f"{a}{os.pathsep}{b}"}).found == [a, b]


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "a directory, not a file"),
        (lambda p: (p.write_text("#!/bin/sh\n"), p.chmod(0o644), p)[2], "not executable"),
        (lambda p: (p.symlink_to(p.parent / "gone"), p)[1], "a broken symbolic link"),
    ],
    ids=["missing", "directory", "not-executable", "broken-link"],
)
def test_a_named_path_that_is_no_executable_is_a_problem_with_its_path_and_why(
    tmp_path: Path, make: object, why: str
) -> None:
    bad = make(tmp_path / "opensips")  # type: ignore[operator]
    good = executable(tmp_path / "good")
    found = find_opensips({"OPENSIPS_BIN": f"{good}:{bad}", "PATH": str(tmp_path)})
    assert found.found == [good]  # the good one is still used, PATH is not searched
    (problem,) = found.problems
    assert problem.startswith(f"{bad}: {why}"), problem
    assert opensips_binaries({"OPENSIPS_BIN": f"{good}:{bad}"}) == [good]  # the plain list leaves it out


def test_separators_alone_name_no_path(tmp_path: Path) -> None:
    found = find_opensips({"OPENSIPS_BIN": "::", "PATH": str(tmp_path)})
    assert found.found == [] and found.problems == ["'::': names no path"]


@pytest.mark.parametrize("unset", [{}, {"OPENSIPS_BIN": ""}], ids=["unset", "empty"])
def test_unset_takes_opensips_from_path_or_nothing(tmp_path: Path, unset: Dict[str, str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_opensips({**unset, "PATH": str(empty)}) == find_opensips({"PATH": str(empty)})
    nothing = find_opensips({**unset, "PATH": str(empty)})
    assert (nothing.found, nothing.problems, nothing.named) == ([], [], "")
    on_path = executable(tmp_path / "opensips")
    assert find_opensips({**unset, "PATH": f"{empty}:{tmp_path}"}).found == [on_path]


def run_e2e(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on tests/e2e/test_startup.py (four tests on the main rig) with this environment."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in ("OPENSIPS_BIN", "PYTEST_ADDOPTS")}
    environment.update({"PATH": str(empty), **env})  # no opensips on PATH
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rsE", "tests/e2e/test_startup.py"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_e2e_suite_fails_on_a_named_path_that_is_no_executable(tmp_path: Path) -> None:
    typo = str(tmp_path / "opensips-3.6.9" / "sbin" / "opensips")
    result = run_e2e(tmp_path, OPENSIPS_BIN=typo)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "6 errors" in out and "skipped" not in out and "passed" not in out, out
    assert f"OPENSIPS_BIN names no executable: {typo}: no such file" in out, out


def test_the_e2e_suite_skips_with_one_reason_without_any_opensips(tmp_path: Path) -> None:
    result = run_e2e(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "6 skipped" in out and "error" not in out and "passed" not in out, out
    reasons = {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("SKIPPED")}
    assert len(reasons) == 1 and next(iter(reasons)).startswith("no OpenSIPS to test against: set OPENSIPS_BIN"), out

"""The fuzz tests' profile, and what they ran.

The profile is chosen by ``KITPIN_FUZZ_PROFILE`` (see :mod:`fuzz_helpers`): ``quick`` by
default, ``deep`` for ``make fuzz``. At the end of the run the number of cases each property
ran is printed; with ``KITPIN_FUZZ_MIN_CASES`` set (``make fuzz`` sets 100000) a run that
executed fewer cases in all fails, so the target cannot silently fuzz less than it says.
"""

from __future__ import annotations

import os

import pytest
from fuzz_helpers import CASES, PROFILE, SECONDS


def _shortfall() -> tuple[int, int] | None:
    """(cases run, cases wanted) when ``KITPIN_FUZZ_MIN_CASES`` wants more than ran."""
    wanted = int(os.environ.get("KITPIN_FUZZ_MIN_CASES", "0") or 0)
    total = sum(CASES.values())
    return (total, wanted) if wanted and total < wanted else None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    total = sum(CASES.values())
    seconds = sum(SECONDS.values())
    terminalreporter.section(f"fuzz ({PROFILE} profile)")
    for name, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{count:>9,} cases {SECONDS[name]:>8.1f} s  {name}")
    terminalreporter.write_line(
        f"{total:>9,} cases {seconds:>8.1f} s  in {len(CASES)} properties "
        "(seconds: in the code under test, not generating inputs)"
    )
    short = _shortfall()
    if short is not None:
        terminalreporter.write_line(
            f"fuzz: only {short[0]:,} cases ran; KITPIN_FUZZ_MIN_CASES wants {short[1]:,}",
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _shortfall() is not None and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

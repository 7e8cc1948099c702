"""Fixtures and reports for the QEMU-booted tests: console logs, failures, timings.

Each VM's console log is saved; when a test that uses a `guest` fails, the log's tail goes
into its report with the path of the full log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.emulator import clean
from integration.guest import TIMINGS, Guest


@pytest.fixture(scope="session")
def console_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    guest = item.funcargs.get("guest") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(guest, Guest):
        log = guest.console.log_path
        guest.console.log.flush()
        tail = log.read_text(errors="replace").splitlines()[-150:]
        tail = [clean(line) for line in tail]
        report.sections.append((f"console log (full: {log})", "\n".join(tail)))
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "integration timings")
        for line in TIMINGS:
            terminalreporter.write_line(line)

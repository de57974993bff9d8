"""Fixtures of the robustness suite: a hostile server, a workspace, and the figures
summary printed at the end of the session ("robustness figures: ...")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from evilserver import EvilServer
from harness import FIGURES, Workspace


@pytest.fixture
def evil() -> Iterator[EvilServer]:
    """A started EvilServer (see evilserver.py), stopped after the test."""
    with EvilServer() as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("robustness figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"robustness figures: {name}: {value}")

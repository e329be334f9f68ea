"""The root + namespace tier: builds the real testbed (namespaces, nginx, nftables, NFQUEUE).

Tests marked ``netns`` are skipped when not root. Every testbed a test builds is torn down after
it, pass or fail, and a session-level safety net runs ``down()`` before the first and after the
last such test, so a crashed earlier run cannot get in the way and nothing is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_helpers import Builder

from fwcluster.testbed import TestbedState, down, set_mode, steering_driver, up
from fwcluster.testbed.filtering import FilterMode


@pytest.fixture(scope="session")
def _safety_net() -> Iterator[None]:
    down()
    try:
        yield
    finally:
        down()


@pytest.fixture(autouse=True)
def _netns_tier(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") is None:
        return
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    request.getfixturevalue("_safety_net")


@pytest.fixture
def testbed() -> Iterator[Builder]:
    """``testbed(instances, config, start_instances=..., mode=...)`` builds one; always torn down."""

    def build(
        instances: int = 1,
        config: str | Path | None = None,
        *,
        start_instances: bool = False,
        mode: FilterMode | str | None = None,
    ) -> TestbedState:
        return up(instances, config, start_instances=start_instances, mode=mode)

    try:
        yield build
    finally:
        down()


@pytest.fixture(scope="module")
def shared_testbed(request: pytest.FixtureRequest) -> Iterator[TestbedState]:
    """Two fw namespaces, no instances, direct mode: shared by the tests of one module."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    request.getfixturevalue("_safety_net")  # its first down() must run before this up()
    state = up(2, None, start_instances=False)
    try:
        yield state
    finally:
        down()


@pytest.fixture
def bed(shared_testbed: TestbedState) -> Iterator[TestbedState]:
    """The shared testbed; the filter mode and the steering table are put back after the test."""
    yield shared_testbed
    set_mode(FilterMode.DIRECT)
    steering_driver(shared_testbed).spread([i.id for i in shared_testbed.instances])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Figures the system tests measured (``record_property``), one line per test, at the end."""
    lines = [
        f"{r.nodeid}: " + ", ".join(f"{k}={v}" for k, v in r.user_properties)
        for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if getattr(r, "when", "") == "call" and r.user_properties
    ]
    if lines:
        terminalreporter.section("figures measured by the system tests")
        for line in lines:
            terminalreporter.write_line(line)

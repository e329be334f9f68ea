"""Steering by hand: read and move the load balancers' bucket -> instance tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from fwcluster.steering import Direction, SteeringDriver, SteeringError
from fwcluster.testbed.balancers import driver_for
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.lock import locked
from fwcluster.testbed.state import DEFAULT_RUN_DIR, TestbedState, require_state

_T = TypeVar("_T")


def steering_driver(
    state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR
) -> SteeringDriver:
    """A steering driver for the running testbed (knows every instance, reads the kernel's table)."""
    return driver_for(state if state is not None else require_state(run_dir))


def _steer_check(state: TestbedState, ids: Sequence[str], buckets: Iterable[int] = ()) -> None:
    known = [i.id for i in state.instances]
    for i in ids:
        if i not in known:
            raise TestbedError(f"unknown instance {i!r} (known: {', '.join(known)})")
    for b in buckets:
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < state.buckets:
            raise TestbedError(f"bucket {b!r} is out of range 0..{state.buckets - 1}")


def _steer(run: Path, action: Callable[[SteeringDriver], _T]) -> _T:
    with locked(run):
        driver = driver_for(require_state(run))
        try:
            return action(driver)
        except SteeringError as e:
            raise TestbedError(str(e)) from None


def steer_table(run_dir: str | Path = DEFAULT_RUN_DIR) -> dict[str, dict[int, str]]:
    """The bucket -> instance table of each direction (``forward``: fwc-lb, ``reverse``: fwc-rt)."""
    try:
        return driver_for(require_state(run_dir)).direction_tables()
    except SteeringError as e:
        raise TestbedError(str(e)) from None


def steer_buckets(
    mapping: dict[int, str], direction: Direction = "both", run_dir: str | Path = DEFAULT_RUN_DIR
) -> None:
    """Map the given buckets to the given instances in ``direction``; no other bucket moves."""
    run = Path(run_dir).absolute()
    _steer_check(require_state(run), list(mapping.values()), mapping)
    _steer(run, lambda d: d.assign(mapping, direction))


def steer_move(
    from_id: str, to_ids: Sequence[str], direction: Direction = "both", run_dir: str | Path = DEFAULT_RUN_DIR
) -> dict[str, dict[int, str]]:
    """Spread every bucket of ``from_id`` round-robin over ``to_ids`` (per direction); the moves made."""
    run = Path(run_dir).absolute()
    if not to_ids:
        raise TestbedError("the target list is empty")
    _steer_check(require_state(run), [from_id, *to_ids])
    return _steer(run, lambda d: d.move(from_id, to_ids, direction))


def steer_spread(
    instance_ids: Sequence[str] | None = None,
    direction: Direction = "both",
    run_dir: str | Path = DEFAULT_RUN_DIR,
) -> dict[int, str]:
    """Spread every bucket round-robin over ``instance_ids`` (default: every instance) again."""
    run = Path(run_dir).absolute()
    state = require_state(run)
    ids = [i.id for i in state.instances] if instance_ids is None else list(instance_ids)
    if not ids:
        raise TestbedError("the target list is empty")
    _steer_check(state, ids)
    return _steer(run, lambda d: d.spread(ids, direction))

"""The testbed's one error type."""

from __future__ import annotations

from typing import ClassVar


class TestbedError(RuntimeError):
    """The testbed cannot be built, found or removed; the message is one line."""

    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

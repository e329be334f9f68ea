"""Entry point of the `fwcluster` command (filled in as the layers land)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    return 0

"""End-of-run lines: what a run says at its end, kept short on a large universe."""

from __future__ import annotations


def capped(lines: list[str], most: int, rest: str) -> list[str]:
    """``lines``, or the first ``most`` of them and a line saying where the ``rest`` is."""
    if len(lines) <= most:
        return lines
    return [*lines[:most], f"... and {len(lines) - most} more {rest}"]

"""One description of the machine a benchmark ran on, for every benchmark's output.

The same code runs 1.3-2x slower on one 2-core machine than on another (``benchmarks/README.md``,
"1,000 assets on the second machine"), so a figure is compared only with figures from the same
CPU model, which is recorded beside it.
"""

from __future__ import annotations

import os
import platform


def describe() -> str:
    """Architecture, CPU model (Linux: ``/proc/cpuinfo``; else what :mod:`platform` knows),
    CPU count and Python version."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{platform.machine()}, {model or 'CPU model unknown'}, {os.cpu_count()} CPUs, "
            f"python {platform.python_version()}")

"""Which code produced an output: recorded in every published manifest and retrain marker."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]  # serving/ops/version.py → the checkout


@functools.cache
def code_version() -> str:
    """``git:<commit>`` (``-dirty`` when tracked files differ from it) of the checkout this
    code runs from, else ``volmargin==<version>`` for an installed release.

    Git is asked about the package's own checkout, not the working directory: a scheduled job
    runs from wherever its unit says, and the outputs must name the code, not the cwd.
    """
    if (_CHECKOUT / ".git").exists():
        try:
            head = _git("rev-parse", "HEAD")
            dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
            if head:
                return f"git:{head}{'-dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass  # no git binary, or not a repository after all: fall back to the version
    try:
        return f"volmargin=={metadata.version('volmargin')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True,
                         timeout=10, check=True)
    return out.stdout.strip()

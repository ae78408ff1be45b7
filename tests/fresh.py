"""What a fresh interpreter imports to serve a model: the imports a daily serve pays."""

from __future__ import annotations

import json
import subprocess
import sys

WATCHED = ("arch", "scipy.signal", "scipy.stats", "sklearn")  # what fits need, ~0.6-1.1 s each


def forecast_code(state: dict, rows: int) -> str:
    """Source that rebuilds a forecaster from ``state``, forecasts 90 days of asset A at 1
    and 7 days and checks it made ``rows`` finite forecasts."""
    return (
        "import numpy as np, pandas as pd\n"
        "from models.registry import forecaster_from_state\n"
        f"model = forecaster_from_state({state!r})\n"
        "idx = pd.MultiIndex.from_product([['A'], pd.date_range('2024-01-01', periods=90)],\n"
        "                                 names=['asset', 'date'])\n"
        "r = np.random.default_rng(0).normal(0, 0.03, 90)\n"
        "fc = model.forecast(pd.DataFrame({'ret_1d': r}, index=idx), horizons=[1, 7])\n"
        f"assert len(fc) == {rows} and np.isfinite(fc['variance']).all(), fc\n"
    )


def watched_imports(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the :data:`WATCHED` modules it imported."""
    probe = (f"{code}\nimport json, sys\nprint(json.dumps(sorted(w for w in {WATCHED!r}\n"
             "    if any(m == w or m.startswith(w + '.') for m in sys.modules))))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

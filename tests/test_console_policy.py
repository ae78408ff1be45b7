"""The run's policy table folds long policy names instead of cutting them."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
from rich.console import Console

from pipelines.ops.console import policy_table


def test_knob_variants_stay_distinguishable_in_a_narrow_terminal() -> None:
    names = [f"policy:har_rv_pooled@confidence=0.99,stress_floor_weight={w}"
             for w in ("0.25", "0.75")]
    summary = pd.DataFrame({"policy": names, "acceptable": [True, False], "breaches": [1, 3],
                            "capital": [0.2, 0.21], "mean_lt": [0.8, 0.79],
                            "bad_debt_lt_sum": [0.0, 0.1], "peak_to_trough": [1.2, 1.3]})
    console = Console(width=100, record=True, color_system=None)
    console.print(policy_table(SimpleNamespace(policy_summary=summary)))
    text = console.export_text()
    first = "".join(line.split("│")[1].strip() for line in text.splitlines()
                    if line.startswith("│"))
    assert "…" not in text
    assert names[0] + names[1] == first  # each name whole, folded over its rows

"""A policy path as the batch job serves it, day after day: the reference the replays are
held to (bit for bit) in the tests."""

from __future__ import annotations

import pandas as pd

from configs.schema import Config
from models.base import asset_frame
from pipelines.policy_eval.backtest import with_outcomes
from serving.apply import reference_today
from serving.decide import decide
from serving.inputs import asset_history, policy_inputs
from serving.policy import PARAMETER_FIELDS
from serving.seasoning import seasoned_inputs


def served_path(panel: pd.DataFrame, fc: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The path of one candidate as the batch job would serve it day after day: the served
    ``decide`` on each day's own inputs, every term computed from that day's known losses,
    and a young asset's stress ES seasoned against the universe ``panel`` holds up to that
    day (:func:`serving.apply.reference_today`)."""
    u, hours = cfg.features.update_interval_days, float(cfg.features.liquidation_delay_hours)
    dates = panel.index.get_level_values("date")
    references: dict[pd.Timestamp, object] = {}  # one per day, shared by the assets
    blocks = []
    for asset, g in fc.groupby("asset", sort=True):
        h = asset_history(asset_frame(panel, str(asset)), g, cfg)
        state, rows = None, []
        for i, day in enumerate(h.dates):
            if day not in references:
                references[day] = reference_today(panel[dates <= day], cfg, day)
            x = seasoned_inputs(policy_inputs(h, i, u, hours, cfg.policy.fhs_window),
                                references[day], cfg.policy)  # type: ignore[arg-type]
            params, state = decide(x, state, cfg.data.stale_after_days, cfg.policy)
            rows.append(params.as_dict())
        block = pd.DataFrame(rows, columns=list(PARAMETER_FIELDS))
        block.insert(0, "date", h.dates)
        block["loss_next"], block["short_loss_next"] = h.loss_next, h.short_loss_next
        block.insert(0, "asset", asset)
        blocks.append(block)
    return with_outcomes(pd.concat(blocks, ignore_index=True))

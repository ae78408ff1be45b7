"""The direct tail of a tail-driven policy bundle: VaR and ES of the covered loss per asset.

A **tail-driven** policy (``tail:<model>@confidence=<q>``, :mod:`pipelines.policy_eval.
tail_driven`) takes the tail term of MMF from a tail model's ES of the covered loss instead
of the FHS tail of its σ forecaster. Its bundle (:mod:`serving.apply`) carries, beside the σ
forecaster (``ewma94``, as in the replay), a ``tail`` entry::

    {"model": "fhs_garch", "level": 0.995, "side": "long",
     "state": <the tail model's JSON state, fitted through fit_cutoff>,
     "forecasts": {asset: {"dates": [...], "var": [...], "es": [...]}}}

``forecasts`` are the walk-forward (out-of-sample) VaR/ES at ``level`` up to ``fit_cutoff``,
the tail twin of the bundle's stored σ forecasts (:func:`serving.apply._wanted_cutoffs`): a
day served before ``fit_cutoff`` (a backfill with a later version) takes its stored forecast,
never the fitted model's, which saw the days after it. ``fit_cutoff`` itself and later days
are forecast by the fitted model from the rows dated up to the day (fitted through the
as-of, the next interval is still unseen), as the replay's walk-forward did (parameters
fitted before, data up to the cutoff).

Where the model has no tail forecast for an asset (no stored one, an asset it was not fitted
on, too few standardized losses: a non-finite value), the update falls back to the policy's
own FHS tail on the same σ, exactly as the replay does on such a day (``tail_fallback``), and
the published row says so in its ``reason`` (the serve counts them in a warning). A model that
*raises* is another matter: the replay never judged a policy on such a day (a tail model that
raises leaves the walk-forward), so the asset gets the fail-safe (frozen: LTV 0, LT and LB
held), the reason naming the error. A forecast that is finite but not a tail (VaR > ES,
outside [0, 1)) is passed on: :func:`serving.decide.failsafe_reason` refuses it and the asset
is frozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config, PolicyConfig
from serving.decide import PolicyInputs, PolicyState, freeze
from serving.inputs import per_asset_lists
from serving.policy import Parameters

FALLBACK_NOTE = "no {model} tail forecast: FHS tail of the σ forecast"
FAILED_NOTE = "fail-safe: tail model {model} failed"  # the reason's start on a frozen asset


class TailSource:
    """The tail entry of a bundle, with its model rebuilt once from the JSON state."""

    def __init__(self, entry: dict[str, Any], fit_cutoff: str) -> None:
        from models.tail.registry import tail_forecaster_from_state  # only for tail bundles

        self.alias = str(entry["model"])
        self.level = float(entry["level"])
        self.side = str(entry.get("side", "long"))
        self.model = tail_forecaster_from_state(entry["state"])
        self.fit_cutoff = pd.Timestamp(fit_cutoff)
        self.stored: dict[str, dict[str, Any]] = dict(entry.get("forecasts") or {})
        # the assets the model was refitted on (None: every asset, an older entry)
        fitted = entry.get("fitted_assets")
        self.fitted: set[str] | None = None if fitted is None else {str(a) for a in fitted}

    @classmethod
    def of(cls, bundle: dict[str, Any]) -> TailSource | None:
        """The bundle's tail source; None for a variance-driven bundle."""
        entry = bundle.get("tail")
        return None if not entry else cls(entry, str(bundle["fit_cutoff"]))

    @property
    def note(self) -> str:
        return FALLBACK_NOTE.format(model=self.alias)

    def _stored_at(self, asset: str, as_of: pd.Timestamp) -> tuple[float, float]:
        got = self.stored.get(asset)
        if not got:
            return (np.nan, np.nan)
        day = as_of.date().isoformat()
        try:
            k = got["dates"].index(day)
        except ValueError:
            return (np.nan, np.nan)
        return (float(got["var"][k]), float(got["es"][k]))

    def values(self, visible: pd.DataFrame, as_of: pd.Timestamp, assets: Iterable[str]
               ) -> tuple[dict[str, tuple[float, float]], dict[str, Exception]]:
        """((VaR, ES) at ``level`` of the covered loss after ``as_of`` per asset, NaN where
        the model has none; the assets for which the model raised, with the error).
        ``visible`` is the feature panel up to ``as_of`` (asset, date index). An asset the
        model was not fitted on (``fitted_assets``, as the walk-forward's last refit) has no
        forecast."""
        names = sorted(set(assets))
        if as_of < self.fit_cutoff:  # a backfill: the out-of-sample stored forecast only
            return {a: self._stored_at(a, as_of) for a in names}, {}
        out = {a: (np.nan, np.nan) for a in names}
        known = [a for a in names if self.fitted is None or a in self.fitted]
        if not known:
            return out, {}
        panel = visible[visible.index.get_level_values("asset").isin(known)]
        cut = pd.DatetimeIndex([as_of])
        errors: dict[str, Exception] = {}
        try:
            frames = [self.model.forecast_tail(panel, [self.level], cut)]
        except Exception:  # one asset may break the call: each is then forecast alone
            frames = []
            for name in known:
                try:
                    frames.append(self.model.forecast_tail(
                        panel[panel.index.get_level_values("asset") == name],
                        [self.level], cut))
                except Exception as err:  # that asset is frozen (module docstring)
                    errors[name] = err
        for frame in frames:
            mine = frame[(frame["side"] == self.side) & np.isclose(frame["level"], self.level)
                         & (frame["cutoff"] == as_of)]
            for row in mine.itertuples():
                out[str(row.asset)] = (float(row.var), float(row.es))
        return out, errors

    def prepare(self, ready: dict[str, PolicyInputs], visible: pd.DataFrame,
                as_of: pd.Timestamp, previous: Mapping[str, PolicyState | None],
                cfg: PolicyConfig, hours: float
                ) -> tuple[dict[str, PolicyInputs], dict[str, tuple[Parameters,
                                                                    PolicyState | None]], set[str]]:
        """The direct tail into every asset's inputs, in one call of the model: (the inputs
        ready to decide, the fail-safe of each asset whose forecast raised, the assets that
        fell back to the FHS tail; their decisions go through :meth:`noted`)."""
        values, errors = self.values(visible, as_of, ready)
        frozen = {n: self.frozen(n, err, previous.get(n), cfg, hours)
                  for n, err in errors.items()}
        out, fell_back = {}, set()
        for n, x in ready.items():
            if n in frozen:
                continue
            out[n], fell = self.inputs(x, values[n])
            if fell:
                fell_back.add(n)
        return out, frozen, fell_back

    def inputs(self, x: PolicyInputs, value: tuple[float, float]) -> tuple[PolicyInputs, bool]:
        """``x`` with the direct tail when both numbers are finite (the replay's rule), and
        whether the update fell back to the FHS tail."""
        var, es = value
        if np.isfinite(var) and np.isfinite(es):
            return replace(x, tail_var=float(var), tail_es=float(es)), False
        return x, True

    def frozen(self, asset: str, err: Exception, previous: PolicyState | None,
               cfg: PolicyConfig, hours: float) -> tuple[Parameters, PolicyState | None]:
        """The fail-safe of an asset whose tail forecast raised, the reason naming it."""
        return freeze(previous, f"{FAILED_NOTE.format(model=self.alias)} for {asset}: "
                      f"{type(err).__name__}: {err}", cfg, stale=False, hours=hours)

    def noted(self, decided: tuple[Parameters, PolicyState | None], fell_back: bool
              ) -> tuple[Parameters, PolicyState | None]:
        """``decided`` with the fallback said in its reason when the update fell back to the
        FHS tail (a frozen row used no tail at all: unchanged)."""
        params, state = decided
        if fell_back and not params.flag_fallback:
            return params.with_reason(self.note), state
        return decided


def refitted_entry(alias: str, cfg: Config, features: pd.DataFrame, cutoff: pd.Timestamp,
                   forecasts: pd.DataFrame) -> dict[str, Any]:
    """The bundle's ``tail`` entry of ``alias`` refitted through ``cutoff`` as the
    walk-forward's refit would be (:func:`models.tail.backtest.fit_on_eligible`), at
    ``policy.confidence``, with its walk-forward ``forecasts`` stored up to the cutoff.
    Raises ValueError where no asset has ``tail.min_train_days`` of history."""
    from models.tail.backtest import fit_on_eligible
    from models.tail.registry import build_tail_forecaster

    model, assets = fit_on_eligible(
        lambda: build_tail_forecaster(alias, cfg.tail, cfg.features.update_interval_days,
                                      cfg.models),
        features, cutoff, cfg.tail.min_train_days)
    if model is None:
        raise ValueError(f"no asset has tail.min_train_days={cfg.tail.min_train_days} days "
                         f"up to {cutoff:%F} to refit {alias} on")
    return entry(alias, float(cfg.policy.confidence), model.state(), forecasts, cutoff,
                 assets)


def entry(model: str, level: float, state: dict[str, Any], forecasts: pd.DataFrame,
          fit_cutoff: pd.Timestamp, fitted_assets: Iterable[str], side: str = "long"
          ) -> dict[str, Any]:
    """The bundle's ``tail`` entry: the fitted model's state, the assets it was fitted on
    and its walk-forward forecasts (tail frame columns, :data:`models.tail.base.TAIL_COLUMNS`,
    one model) at ``level`` on ``side`` up to ``fit_cutoff``."""
    rows = forecasts[(forecasts["side"] == side) & np.isclose(forecasts["level"], level)
                     & (forecasts["cutoff"] <= fit_cutoff)]
    stored = per_asset_lists(rows, {"var": "var", "es": "es"})
    return {"model": model, "level": float(level), "side": side, "state": state,
            "fitted_assets": sorted(str(a) for a in fitted_assets), "forecasts": stored}

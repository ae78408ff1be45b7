"""``volmargin stress``: stress today's published parameters over a book of positions.

Reads the newest revision of the published ``asof=D`` partition (the parameters a risk engine
applies), market data cut strictly at D (prices, ADV, betas, the FHS pool and the episodes all
end on or before D), a real book (validated) or the seeded synthetic one, builds every scenario
(historical as-is and filtered, hypothetical, joint FHS), runs the liquidation model, publishes
``stress.parquet`` + ``stress_summary.json`` under ``_stress/asof=D/rev=n`` (see
:mod:`pipelines.stress.publish`) and logs one MLflow run ``stress`` with the tables and plots.
Any invalid input raises before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configs.risk import StressEpisode
from configs.schema import Config, ConfigError, parse_yaml
from features.build import tail_features
from features.loaders import MarketData, load_market
from pipelines.policy_eval.episodes import stress_days_by_rule
from pipelines.stress.book import Book, load_book, sizing_ltv, synthetic_book, validate_book
from pipelines.stress.liquidation import Market, Outcome, health_factor, liquidate
from pipelines.stress.montecarlo import monte_carlo, t_copula
from pipelines.stress.publish import publish_stress
from pipelines.stress.report import concentration, scenario_rows, stress_table, summary
from pipelines.stress.scenarios import (
    Scenario,
    Skipped,
    ewma_sigma_after,
    historical_scenarios,
    hypothetical_scenarios,
)
from serving.inputs import covered_loss_fraction
from serving.layout import SUCCESS_NAME, current_partition, relative
from serving.ops.version import code_version
from serving.policy import trailing_adv
from serving.publish import PARQUET_NAME, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StressResult:
    """A stress run: ``table`` (rows of ``stress.parquet``), ``summary``
    (``stress_summary.json``), the scenarios and the liquidation outcome of each."""

    table: pa.Table
    summary: dict[str, Any]
    scenarios: list[Scenario]
    outcomes: dict[str, Outcome]
    path: Path | None = None       # published stress revision (None when not published)
    created: bool = False


def forecasts_root(cfg: Config) -> Path:
    return Path(cfg.paths.outputs_dir) / "forecasts"


STRESS_COLUMNS = ["asset", "sigma_1d", "lt", "ltv", "lb", "flag_stale", "flag_fallback"]
# read when present: the LTVs admitted before a freeze size its positions (schema >= 3)
OPTIONAL_COLUMNS = ["admitted_ltv"]


def read_parameters(path: Path) -> pd.DataFrame:
    """The columns the stress needs from a published partition, after its hashes are checked.

    Only these columns are read, so a partition of another ``schema_version`` that still
    carries them can be stressed (the stress reads parameters, it does not republish them).
    """
    read_manifest(path)  # raises unless _SUCCESS, manifest and every file's sha256 agree
    table = pq.read_table(path / PARQUET_NAME)
    missing = [c for c in STRESS_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path / PARQUET_NAME} lacks the columns {missing} the stress needs")
    optional = [c for c in OPTIONAL_COLUMNS if c in table.column_names]
    return table.select(STRESS_COLUMNS + optional).to_pandas()


def with_scenario_file(cfg: Config, path: Path | str | None) -> Config:
    """``cfg`` with the keys of a YAML scenario file (a subset of ``stress``) applied."""
    if path is None:
        return cfg
    raw = parse_yaml(Path(path).read_text(), f"scenario file {path}") or {}  # no duplicate keys
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a scenario file is a mapping of stress.* keys")
    try:
        return cfg.with_overrides({f"stress.{k}": v for k, v in raw.items()})
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("<overrides>", f"scenario file {path}")) from None


def market_state(params: pd.DataFrame, data: MarketData, as_of: dt.date, cfg: Config) -> Market:
    """Prices (close of D), LT/LB from the parameters, the EWMA σ of the next day
    (:func:`pipelines.stress.scenarios.ewma_sigma_after`: what scales every scenario and the
    slippage, independent of the model whose parameters are stressed; NaN where the
    published row has no σ forecast, whose asset is unusable), the policy's trailing ADV
    (:func:`serving.policy.trailing_adv`)."""
    p = params.set_index("asset").sort_index()
    assets = list(p.index)
    price, adv, sigma = [], [], []
    for a in assets:
        d = data.daily[a].loc[: pd.Timestamp(as_of)]
        price.append(float(d["close"].iloc[-1]) if len(d) else np.nan)
        sigma.append(ewma_sigma_after(d["close"], cfg.stress.ewma_decay, as_of)
                     if np.isfinite(float(p.at[a, "sigma_1d"])) else np.nan)
        # the policy's ADV, ending the day before: a crash day's own volume is not liquidity
        trailing = trailing_adv(d["close"] * d["volume"], cfg.policy.liquidity.adv_window)
        trailing = trailing[trailing.index <= pd.Timestamp(as_of)]
        adv.append(float(trailing.iloc[-1]) if len(trailing) else np.nan)
    if not np.all(np.isfinite(price)):
        bad = [a for a, x in zip(assets, price, strict=True) if not np.isfinite(x)]
        raise ValueError(f"no close on or before {as_of} for {bad}: cannot price the book")
    return Market(assets, np.array(price), p["lt"].to_numpy(float), p["lb"].to_numpy(float),
                  np.array(sigma), np.array(adv),
                  cfg.policy.liquidity.impact_coef, cfg.stress.slippage_cap)


def unusable_assets(params: pd.DataFrame) -> list[str]:
    """Assets whose published row cannot be stressed: stale data or no σ forecast (fallback
    parameters). Their moves are *missing* in every scenario: holders are excluded, counted."""
    bad = params["flag_stale"].astype(bool) | ~np.isfinite(params["sigma_1d"].astype(float))
    return sorted(params.loc[bad, "asset"])


def mark_missing(scenario: Scenario, assets: list[str]) -> Scenario:
    """``scenario`` with the moves of ``assets`` set missing (NaN, source ``stale``)."""
    cols = [scenario.assets.index(a) for a in assets if a in scenario.assets]
    if not cols:
        return scenario
    rel = scenario.relative.copy()
    rel[..., cols] = np.nan
    source = scenario.source | dict.fromkeys(assets, "missing")
    note = "; ".join(filter(None, [scenario.note, f"stale or no forecast: {', '.join(assets)}"]))
    return dataclasses.replace(scenario, relative=rel, source=source, note=note)


def covered_losses(cfg: Config, data: MarketData, as_of: dt.date) -> dict[str, pd.Series]:
    """Each asset's covered long loss as a fraction of value, by loss day, built as the
    feature panel builds ``worst_loss_long`` (:func:`features.build.tail_features`, on the
    complete calendar); an asset whose losses cannot be computed is left out (logged)."""
    losses = {}
    for asset, daily in data.daily.items():
        try:
            frame = tail_features(daily, data.hourly.get(asset), cfg.features)
            losses[asset] = covered_loss_fraction(frame, cfg.policy)
        except Exception as exc:  # one asset's odd data: left out, logged
            logger.warning("stress of %s: %s left out of the stress-day rule: %s: %s", as_of,
                           asset, type(exc).__name__, exc)
    return losses


def found_episodes(cfg: Config, data: MarketData, as_of: dt.date
                   ) -> tuple[list[StressEpisode], list[Skipped]]:
    """The market-wide stress days of ``data`` up to ``as_of`` that no replayed
    ``stress.episodes`` entry covers, one-day episodes named ``found_YYYY-MM-DD``
    (``stress.found_days``): the rule of ``evaluation.stress_days``
    (:func:`~pipelines.policy_eval.episodes.detect_stress_days`) on each asset's covered loss
    (``policy.loss``), built as the feature panel builds it
    (:func:`features.build.tail_features`: the complete calendar, hourly candles where there
    are, the daily range where not). An episode that ends after ``as_of`` is not replayed, so
    it covers nothing. An asset whose losses cannot be computed is left out of the rule
    (logged); a rule that cannot run is one :class:`Skipped` entry, never a failed stress
    run: the found days only add to the listed scenarios."""
    sd, s = cfg.evaluation.stress_days, cfg.stress
    if not (s.found_days and sd.enabled):
        return [], []
    losses = covered_losses(cfg, data, as_of)
    if not losses:
        return [], []
    try:
        wide = pd.DataFrame(losses).sort_index()
        wide = wide[wide.index <= pd.Timestamp(as_of)]
        days = stress_days_by_rule(wide, sd, cfg.evaluation.co_breach_min_assets)
    except Exception as exc:  # the listed scenarios stand without it
        return [], [Skipped("found_days", "historical", f"{type(exc).__name__}: {exc}")]
    replayed = [ep for ep in s.episodes if ep.end <= as_of]
    names = {ep.name for ep in s.episodes}
    out = []
    for day in days["loss_day"].dt.date:
        name = f"found_{day:%Y-%m-%d}"
        if name not in names and not any(ep.start <= day <= ep.end for ep in replayed):
            out.append(StressEpisode(name=name, start=day, end=day))
    return out, []


def build_scenarios(cfg: Config, data: MarketData, market: Market, held: np.ndarray,
                    as_of: dt.date, unusable: list[str] | tuple[str, ...] = (),
                    ) -> tuple[list[Scenario], list[Skipped]]:
    """Historical (as-is and filtered: the configured episodes and the stress days found in the
    data, :func:`found_episodes`), hypothetical and the joint FHS scenario; and those that
    could not be built, with the reason (a hypothetical shock of an unusable asset, the
    Monte Carlo without a year of returns). ``market.sigma_1d`` is the EWMA σ of the next
    day (:func:`market_state`; NaN where there is none or the published row has no
    forecast): a scenario never sees a placeholder σ."""
    s, assets, sigma = cfg.stress, market.assets, market.sigma_1d
    delay = cfg.features.liquidation_delay_hours
    found, not_found = found_episodes(cfg, data, as_of)
    listed = s.model_copy(update={"episodes": [*s.episodes, *found]})
    scenarios = historical_scenarios(listed, data.daily, data.hourly, assets, sigma, as_of,
                                     delay)
    shocks, skipped = hypothetical_scenarios(s, data.daily, assets, sigma, delay, unusable)
    skipped = not_found + skipped
    scenarios += shocks
    used = [a for a, h in zip(assets, held, strict=True) if h]
    if not used:
        return scenarios, skipped
    draws = {"fhs_joint": lambda: monte_carlo(data.daily, used, sigma[held], s.mc_paths,
                                              s.mc_horizon_days, s.mc_seed, s.ewma_decay,
                                              s.pool_min_history_share)}
    if s.t_copula_dof is not None:
        draws["t_copula"] = lambda: t_copula(data.daily, used, sigma[held], s.mc_paths,
                                             s.mc_horizon_days, s.mc_seed, s.ewma_decay,
                                             s.t_copula_dof, s.pool_min_history_share)
    built = []
    for name, draw in draws.items():  # each on its own: one that cannot be drawn (no asset
        try:                          # with a year of returns) leaves the other standing
            built.append(draw())
        except ValueError as exc:
            logger.warning("stress of %s: Monte Carlo scenario %s skipped: %s", as_of, name,
                           exc)
            skipped = [*skipped, Skipped(name, "monte_carlo", str(exc))]
    for scn in built:
        rel = np.ones((s.mc_paths, s.mc_horizon_days + 1, len(assets)))
        rel[:, :, held] = scn.relative  # an asset nobody holds does not move (no exposure)
        source = {a: (scn.source[a] if h else "not_held")
                  for a, h in zip(assets, held, strict=True)}
        scenarios.append(dataclasses.replace(scn, relative=rel, assets=assets, source=source))
    return scenarios, skipped


def stress_book(book: Book, market: Market, scenarios: list[Scenario], as_of: dt.date,
                top_n: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]],
                                     dict[str, Outcome]]:
    """Run every scenario: (rows of stress.parquet, per-scenario details, outcomes)."""
    rows, details, outcomes = [], {}, {}
    total_debt = float(book.debt_usd.sum())
    for scn in scenarios:
        m = market if scn.sigma_multiplier == 1.0 else dataclasses.replace(
            market, sigma_1d=market.sigma_1d * scn.sigma_multiplier)
        out = liquidate(book, m, scn.relative, scn.delay_steps)
        outcomes[scn.name] = out
        rows += scenario_rows(as_of, scn, out, total_debt)
        details[scn.name] = {"note": scn.note, "missing_assets": scn.missing_assets,
                             "daily_assets": [a for a in scn.assets
                                              if scn.source.get(a) == "daily"],
                             **concentration(scn, out, book, top_n)}
    return rows, details, outcomes


def stress_parameters(cfg: Config, params: pd.DataFrame, as_of: dt.date,
                      book_path: Path | str | None = None, monte_carlo: bool = True,
                      parameters_ref: dict[str, Any] | None = None) -> StressResult:
    """Stress any parameters frame (published or a challenger's) over the book; no I/O out.

    ``params`` needs :data:`STRESS_COLUMNS`; market data is read from ``cfg.paths.data_dir``
    cut at ``as_of``. ``monte_carlo=False`` runs only the standard (deterministic) scenarios.
    """
    data = load_market(cfg.paths.data_dir, sorted(params["asset"]), as_of=as_of)
    market = market_state(params, data, as_of, cfg)
    unusable = unusable_assets(params)
    keep = ~np.isin(market.assets, unusable)
    stable = cfg.stress.stablecoins
    frozen: list[dict[str, Any]] = []
    if book_path is None:
        # a frozen asset's positions opened before the freeze still exist (book.sizing_ltv);
        # ADV 0: nobody is given an unusable asset
        ltv, frozen = sizing_ltv(params, cfg.policy.roles.ltv_gap, unusable)
        frame = synthetic_book(pd.Series(market.price, market.assets), ltv,
                               pd.Series(np.where(keep, market.adv_usd, 0.0), market.assets),
                               cfg.stress.book, stable)
        book = validate_book(frame, market.assets, stable, "<synthetic book>", 0)
        book_source = f"synthetic (seed {cfg.stress.book.seed})"
    else:
        book = load_book(book_path, market.assets, stable)
        book_source = Path(book_path).name
    held = (book.collateral.sum(axis=0) > 0) & keep & monte_carlo
    built, skipped = build_scenarios(cfg, data, market, held, as_of, unusable)
    scenarios = [mark_missing(s, unusable) for s in built]
    # σ only enters the liquidation through slippage, and unusable assets are never
    # liquidated (their holders are excluded): 0 keeps 0 × NaN out of the sums. Only here,
    # after the scenarios are built: a scenario divided by this 0 would be -inf, a price of 0.
    liquidation = dataclasses.replace(market, sigma_1d=np.where(keep, market.sigma_1d, 0.0))
    rows, details, outcomes = stress_book(book, liquidation, scenarios, as_of,
                                          cfg.stress.top_n)
    book_info = {"source": book_source, "accounts": len(book.accounts),
                 "debt_usd": float(book.debt_usd.sum()),
                 "collateral_usd": float((book.collateral @ market.price).sum()),
                 # already below HF 1 today: liquidated in every scenario, even a calm one
                 "unhealthy_at_start": int((health_factor(
                     book.collateral, market.price, market.lt, book.debt_usd) < 1).sum()),
                 "frozen_sizing": frozen}
    doc = summary(as_of, rows, details, book_info, parameters_ref or {}, skipped)
    return StressResult(stress_table(rows), doc, scenarios, outcomes)


def run_stress(cfg: Config, as_of: dt.date, book_path: Path | str | None = None,
               scenarios_path: Path | str | None = None, publish: bool = True,
               track: bool = True) -> StressResult:
    """The whole job (module docstring). Raises before writing on any invalid input."""
    cfg = with_scenario_file(cfg, scenarios_path)
    root = forecasts_root(cfg)
    current = current_partition(root, as_of)
    if current is None:
        raise FileNotFoundError(f"no published parameters for {as_of} under {root}: run "
                                f"`volmargin serve --as-of {as_of}` first")
    revision, part = current
    pointer = {"path": relative(root, part), "revision": revision,
               "success_sha256": (part / SUCCESS_NAME).read_text().strip()}
    result = stress_parameters(cfg, read_parameters(part), as_of, book_path,
                               parameters_ref=pointer)
    if publish:
        path, created = publish_stress(result.table, result.summary, root, as_of,
                                       code_version())
        result = dataclasses.replace(result, path=path, created=created)
    if track:
        from pipelines.stress.tracking import log_stress

        log_stress(cfg, result)
    return result


def stress_published(cfg: Config, as_of: dt.date, skipped: list[str] | None = None
                     ) -> StressResult | None:
    """The stress step of ``volmargin run``, after serving: stress the partition just
    published over the configured book (``stress.after_run``). Failure is local: a stress
    that cannot run is logged, said in ``skipped`` (the run lists it among its failures) and
    skipped; the publication stands."""
    if not cfg.stress.after_run:
        return None
    try:
        return run_stress(cfg, as_of)
    except Exception as exc:  # published already: any error (data, book, MLflow, disk) is
        # the stress's own, logged and skipped, never the run's
        line = f"stress of {as_of} skipped: {type(exc).__name__}: {exc}"
        logger.warning("%s", line)
        if skipped is not None:
            skipped.append(line)
        return None


def print_stress(result: StressResult, console: Any) -> None:
    """One line per scenario, the Monte Carlo tail and where the result was published."""
    from rich.table import Table

    doc = result.summary
    table = Table(title=f"Stress of the parameters of {doc['as_of']} over "
                        f"{doc['book']['accounts']:,} accounts ({doc['book']['source']}), "
                        f"debt ${doc['book']['debt_usd'] / 1e6:,.1f}M")
    for name in ("scenario", "kind", "liquidated", "seized $M", "bad debt $M", "% of debt",
                 "% of evaluated", "excluded", "excluded debt $M"):
        table.add_column(name, justify="left" if name in ("scenario", "kind") else "right")
    for s in doc["scenarios"]:
        seen = s["bad_debt_share_evaluated"]
        table.add_row(s["scenario"], s["kind"], f"{s['accounts_liquidated']:,.1f}",
                      f"{s['liquidated_value_usd'] / 1e6:,.2f}",
                      f"{s['bad_debt_usd'] / 1e6:,.3f}", f"{s['bad_debt_share']:.3%}",
                      "n/a" if seen is None else f"{seen:.3%}", str(s["excluded_accounts"]),
                      f"{s['excluded_debt_usd'] / 1e6:,.2f}")
    console.print(table)
    for item in doc["skipped_scenarios"]:
        console.print(f"Skipped {item['scenario']}: {item['reason']}")
    for item in doc["book"]["frozen_sizing"]:
        console.print(f"{item['asset']} is frozen (LTV 0): its positions were sized at LTV "
                      f"{item['sizing_ltv']:.4f} ({item['basis']})")
    for label, mc in (("Joint FHS", doc["monte_carlo"]), ("t copula", doc["t_copula"])):
        if mc:
            console.print(f"{label}, {mc['paths']:,} paths: VaR95 ${mc['bad_debt_var95']:,.0f}, "
                          f"ES95 ${mc['bad_debt_es95']:,.0f}, VaR99 "
                          f"${mc['bad_debt_var99']:,.0f}, ES99 ${mc['bad_debt_es99']:,.0f}, "
                          f"P(bad debt > 0) {mc['prob_bad_debt']:.2%}")
    if doc["book"]["unhealthy_at_start"]:
        console.print(f"{doc['book']['unhealthy_at_start']:,} accounts are below HF 1 already")
    console.print(f"Worst historical: {doc['worst_historical']} (with every asset listed: "
                  f"{doc['worst_historical_complete']}); worst standard: "
                  f"{doc['worst_standard']} ({doc['worst_standard_bad_debt_share']:.3%} of the "
                  f"debt it evaluated); worst collapse: {doc['worst_collapse']} "
                  f"({doc['worst_collapse_bad_debt_share']:.3%} of debt)")
    if result.path is not None:
        state = "published" if result.created else "already published (identical)"
        console.print(f"Stress {state}: {result.path}")

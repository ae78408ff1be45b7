"""The batch serving job: ``models:/volmargin-policy@champion`` + point-in-time features →
one published partition ``outputs/forecasts/asof=D/``.

Features are rebuilt from data truncated at the as-of date, so serving a past date sees exactly
what was known then (the model's parameters, however, are the champion's: serve a past date
with the version that was champion then, ``model_version=``, for a faithful replay). Without
an as-of, the last complete UTC day in the data is served (:mod:`serving.market`); a future
as-of is refused. An asset whose data ends before the as-of gets the policy's fail-safe on its
previous parameters, flagged stale (:func:`serving.apply.asset_parameters`).

Before the model is loaded its stored files are located under this project's artifact root
(a moved project still serves), checked against the sha256 tagged at registration, and its
bundled config compared with the serve-time one: the policy values the model applies are its
own, so an environment override of one is refused and a config-file difference is recorded in
the manifest (``config_not_applied``), except in the settings the policy protocol froze at
registration (``frozen_settings``: the file's value there is where the choice starts). The
model's pinned requirements and Python version are checked against this environment
(:func:`serving.ops.registry.environment_mismatches`); a mismatch does not stop the serve, as
in mlflow, but is a note and recorded in the manifest (``environment_mismatches``).

A model that cannot be served (no ``@champion``, its stored files gone or changed since
registration, or failing to load) is the fail-safe's "missing model": when parameters were
published before, the day is published with every asset frozen on them (LTV 0, LT and LB
held, flagged, the reason in every row and the manifest), so a risk engine following
``LATEST`` stops admitting new borrowing on parameters nobody can recompute, and the run
still fails (:class:`ModelUnavailableError`, exit 1) for a person to look
(:func:`freeze_without_model`). An explicitly requested version that does not exist is an
operator's error and only fails.

One run at a time (``outputs/.serve.lock``, :mod:`serving.ops.lock`). The previously published
parameters (newest revision of the latest earlier day) are the policy's guardrail state. The
partition carries update records (:mod:`serving.records`) against the values in force: the
previous day's, or the superseded revision's when ``force`` writes a revision.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from configs.schema import ENV_PREFIX, Config, FeaturesConfig
from features.freshness import freshness_report
from features.schema import feature_view
from features.window import bundle_window, serve_columns, serve_panel
from serving.apply import frozen_frame, frozen_rows
from serving.layout import current_partition, current_partitions, sweep_outputs, sweep_staging
from serving.market import candle_cache, check_as_of, load_as_of, loss_days
from serving.ops.lock import exclusive, lock_path
from serving.ops.registry import (
    ChampionMissingError,
    ModelArtifactMissingError,
    ModelIntegrityError,
    champion_uri,
    environment_mismatches,
    model_dir,
    reconcile_alias,
    verify_integrity,
)
from serving.ops.tracking import artifact_root, log_context, setup
from serving.ops.version import code_version
from serving.publish import UPDATES_NAME, Published, publish_partition, read_partition
from serving.records import update_records
from serving.tail_source import FAILED_NOTE, FALLBACK_NOTE

PREVIOUS = ("mmf", "imf", "lt", "ltv", "lb")
Progress = Callable[[str, int, int], None]


class ModelVersionMissingError(LookupError):
    """The requested version of the policy model is not registered: nothing may be served."""


@dataclass(frozen=True)
class ServeResult:
    """What one serve run published (or found already published).

    ``updates`` are the records in the partition; ``swept`` names the staging leftovers of
    crashed runs that were removed before publishing; ``failures`` the data files skipped
    under ``keep_going``; ``warnings`` data rows ignored and unverifiable model files;
    ``config_not_applied`` serve-time config values the model's bundled config overrode;
    ``frozen_settings`` those the policy protocol froze at registration that the config file
    gives otherwise (``{key: {"config": v, "model": w}}``: the file's value is where the
    protocol's choice starts, not a value a retrain would apply).
    """

    published: Published
    parameters: pd.DataFrame
    model_version: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config_not_applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    frozen_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def as_of(self) -> dt.date:
        return dt.date.fromisoformat(self.published.manifest["as_of"])

    @property
    def stale_assets(self) -> list[str]:
        return sorted(self.parameters.loc[self.parameters["flag_stale"], "asset"])

    @property
    def fallback_assets(self) -> list[str]:
        return sorted(self.parameters.loc[self.parameters["flag_fallback"], "asset"])


def _noop(step: str, done: int, total: int) -> None:
    return None


def forecasts_root(cfg: Config) -> Path:
    return Path(cfg.paths.outputs_dir) / "forecasts"


def resolve_model(name: str, version: str | None) -> tuple[str, Any]:
    """``(uri, model version)`` of ``version``, or of ``@champion`` when None.

    Raises
    ------
    serving.ops.registry.ChampionMissingError
        No version is aliased ``@champion``.
    ModelVersionMissingError
        ``version`` is not a registered version of ``name``.
    """
    if version is None:
        _, mv = champion_uri(name)
    else:
        try:
            mv = MlflowClient().get_model_version(name, str(version))
        except mlflow.exceptions.MlflowException:
            raise ModelVersionMissingError(
                f"registered model {name!r} has no version {version} in "
                f"{mlflow.get_tracking_uri()}; see `volmargin registry history` for the "
                "versions that were champion") from None
    # The concrete version, not the alias: serving v3 by number or as @champion is the same
    # result, and the manifest must say which version it was even after the alias moves.
    return f"models:/{name}/{mv.version}", mv


def previous_parameters(root: Path, as_of: dt.date) -> pd.DataFrame | None:
    """The newest revision of the latest partition strictly before ``as_of``, or None; one of
    an older schema is upgraded in memory (``attrs["upgraded"]``: a new release carries the
    thresholds in force and the announced changes forward, :data:`serving.schema.UPGRADES`)."""
    earlier = [path for day, (_, path) in current_partitions(root).items() if day < as_of]
    return read_partition(earlier[-1], upgrade=True) if earlier else None


def with_previous(params: pd.DataFrame, prev: pd.DataFrame | None) -> pd.DataFrame:
    out = params.copy()
    prev_by_asset = prev.set_index("asset") if prev is not None else None
    for col in PREVIOUS:
        if prev_by_asset is not None:
            out[f"prev_{col}"] = out["asset"].map(prev_by_asset[col])
        else:
            out[f"prev_{col}"] = math.nan
    out["change_mmf"] = out["mmf"] - out["prev_mmf"]
    return out


def serve(
    cfg: Config, as_of: dt.date | None = None, *, model_version: str | None = None,
    force: bool = False, progress: Progress = _noop, keep_going: bool = False,
    today: dt.date | None = None, environ: Mapping[str, str] | None = None,
) -> ServeResult:
    """Publish the policy's parameters as of ``as_of``.

    Parameters
    ----------
    cfg : Config
        Resolved configuration (paths, data, features, registry).
    as_of : datetime.date, optional
        UTC day to publish; ``cfg.serving.as_of``, else the last complete UTC day in the data
        (:func:`serving.market.load_as_of`: later rows are ignored with a warning).
    model_version : str, optional
        Registered version to serve instead of ``@champion`` (replays, rollbacks).
    force : bool
        Publish a new revision when the day is already published with other content.
    progress : callable
        ``progress(step, done, total)``, called as each step starts.
    keep_going : bool
        A malformed data file fails only its asset: the policy's fail-safe is applied to the
        asset's previous parameters, flagged stale (no row if it was never published), and
        the file is listed in ``failures`` and the manifest.
    today : datetime.date, optional
        Today in UTC (tests pin it); default the clock.
    environ : mapping, optional
        Environment the config's ``VOLMARGIN__*`` overrides came from; ``os.environ``.

    Raises
    ------
    serving.market.FutureAsOfError
        ``as_of`` is after today; raised before anything is read.
    serving.ops.lock.LockHeldError
        Another serve run holds ``outputs/.serve.lock``.
    serving.ops.registry.ChampionMissingError, ModelVersionMissingError
        Nothing to serve; raised before any data is read.
    serving.ops.registry.ModelArtifactMissingError, ModelIntegrityError
        The version's stored files are gone or changed since registration.
    ModelLoadError
        The version's verified files fail to load.
    ModelUnavailableError
        One of the three above (or no ``@champion``) with parameters published before: the
        day was published with every asset frozen on them (:func:`freeze_without_model`).
    ServeConfigError
        An environment override sets a policy value the model's bundled config decides.
    serving.publish.PartitionExistsError
        The day is published with other content and ``force`` is False.
    """
    as_of = as_of or cfg.serving.as_of
    if as_of is not None:
        check_as_of(as_of, today)
    root = forecasts_root(cfg)
    with exclusive(lock_path(cfg.paths.outputs_dir, "serve"), "serve"):
        swept = sweep_staging(root)  # under the lock, any staging entry is a dead run's
        swept += sweep_outputs(cfg.paths.outputs_dir)
        setup(cfg)
        progress("resolve model", 0, 1)
        # a move of @champion made in the MLflow UI or API writes no alias history: recorded
        # now, said in the serve's notes ("version at date D" stays answerable)
        moved = _reconciled(cfg.registry.model_name) if model_version is None else None
        try:
            uri, mv = resolve_model(cfg.registry.model_name, model_version)
            directory, unverified = locate_policy(cfg, mv)
            progress("load model", 0, 1)
            # the stored files are those registered (hashes checked above), so loading their
            # code is safe; the bundle is the model's own, parsed once (7 MB of JSON at 1,000
            # assets)
            try:
                model = mlflow.pyfunc.load_model(str(directory), suppress_warnings=True)
                bundle = model.unwrap_python_model().bundle
            except Exception as exc:
                raise ModelLoadError(
                    f"version {mv.version} of {cfg.registry.model_name!r} could not be "
                    f"loaded from {directory}: {type(exc).__name__}: {exc}") from exc
            try:  # a bundle this code cannot read (a setting renamed or now refused)
                Config.model_validate(bundle["config"])
            except Exception as exc:
                errors = exc.errors() if hasattr(exc, "errors") else []
                what = ("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in errors[:3])
                        or f"{type(exc).__name__}: {exc}")
                raise ModelLoadError(
                    f"version {mv.version} of {cfg.registry.model_name!r}: its bundled config "
                    f"does not validate under this code ({what}); retrain, or serve a "
                    "version this code reads") from exc
        except (ChampionMissingError, ModelArtifactMissingError, ModelIntegrityError,
                ModelLoadError) as exc:
            frozen = freeze_without_model(cfg, root, as_of, str(exc), keep_going, today,
                                          force, progress)
            if frozen is None:
                raise
            raise ModelUnavailableError(str(exc), frozen) from exc
        # mlflow's own environment check scans every installed distribution (~0.8 s): the
        # same check, on the model's pinned requirements only, reported as notes below
        mismatches = environment_mismatches(directory)
        protocol = dict(bundle.get("frozen") or {})  # chosen by the protocol at registration
        ignored = config_not_applied(cfg, bundle["config"], environ, protocol)
        chosen = frozen_settings(cfg, protocol)
        used = bundle["config"]["policy"]
        progress("load data", 0, 1)
        # unchanged files come from the validated-candle cache, appended rows are validated
        pit = load_as_of(cfg.paths.data_dir, cfg.data.assets, as_of, keep_going, today,
                         cfg.data.max_file_mb, cache=candle_cache(cfg))
        market, as_of = pit.market, pit.as_of
        progress("features", 0, 1)
        # only the trailing rows the policy reads, built in memory (features/window.py)
        # with the feature settings the model was fitted and judged on (the loss window H,
        # the interval U, the outage bridge...): a serve-time edit is reported, not applied
        features = model_features(cfg, bundle)
        window = bundle_window(bundle, features, as_of, market.macro)
        # and only the columns this model and policy read, built for all assets at once
        # (each day's worst hourly loss stored once: features/loss_days.py)
        panel, fingerprint = serve_panel(market, features, as_of, window,
                                         serve_columns(bundle), loss_days(cfg))
        prev = previous_parameters(root, as_of)
        later = [day for day in current_partitions(root) if day > as_of]
        # json.dumps writes floats with repr (exact round trip); DataFrame.to_json keeps 10
        # decimals, so a value held by the deadband came back changed in the 11th digit.
        prev_json = json.dumps(prev.to_dict(orient="records"), default=str) if prev is not None \
            else ""
        progress("apply policy", 0, 1)
        flat = feature_view(panel).reset_index()
        params = model.predict(flat, params={"as_of": as_of.isoformat(), "previous": prev_json})
        # an asset delisted on purpose is no longer published, whether its files are still
        # in the data directory or not (absent_assets leaves it out when they are gone)
        retired = set(cfg.serving.retired_assets)
        params = params[~params["asset"].isin(retired)].reset_index(drop=True)
        failed = {a: why for a, why in failed_assets(market.failures).items()
                  if a not in retired}
        here = set(params["asset"])
        reasons = {a: why for a, why in failed.items() if a not in here}
        absent = absent_assets(prev, here | set(failed), cfg.serving.retired_assets)
        reasons.update(absent)
        live = params.loc[~params["flag_fallback"].astype(bool), "asset"]
        lost = hourly_lost(market, as_of, cfg.data.stale_after_days, list(live))
        refused = gate_refused(bundle, dict(mv.tags), str(mv.version), list(live))
        untried = {**unvalidated(bundle, list(live)), **refused}
        distrusted = {**lost, **untried}
        if distrusted:  # rows on the range proxy or an unvalidated model: the fail-safe
            params = params[~params["asset"].isin(distrusted)].reset_index(drop=True)
            reasons.update(distrusted)
        frozen = frozen_frame(bundle, prev, reasons, as_of, new_too=set(distrusted),
                              fresh=set(untried))
        if len(frozen):
            params = pd.concat([params, frozen], ignore_index=True).sort_values(
                "asset", ignore_index=True)
        params = _with_lineage(with_previous(params, prev), cfg, mv, fingerprint)
        current = current_partition(root, as_of)
        in_force = read_partition(current[1], upgrade=True) if current is not None else prev
        records = update_records(params, in_force, revision=current[0] + 1 if current else 1)
        progress("publish", 0, 1)
        metadata = {"model_uri": uri, "model_name": cfg.registry.model_name,
                    "model_version": str(mv.version), "run_id": str(mv.run_id),
                    "forecaster": str(mv.tags.get("forecaster", "unknown")),
                    # the registered policy (a tail-driven one names its tail model)
                    **({"policy": str(mv.tags["policy"])} if mv.tags.get("policy") else {}),
                    **({"tail_model": str(mv.tags["tail_model"])}
                       if mv.tags.get("tail_model") else {}),
                    "fit_cutoff": str(bundle.get("fit_cutoff")),
                    "policy_version": str(params["policy_version"].iloc[0]),
                    "feature_fingerprint": fingerprint,
                    # what the model applied (its bundled config), not the serve-time config
                    "confidence": used["confidence"], "policy_measure": used["measure"]}
        registered_by = mv.tags.get("code_version")
        if registered_by and registered_by != code_version():
            # the version computes its parameters with the code installed now (its bundle
            # holds states and config, not the policy code): which code fitted it, said
            metadata["code_version_registered"] = str(registered_by)
        if refused_by_gate(dict(mv.tags)):  # promoted all the same
            metadata["gate_refused"] = str(mv.tags.get("gate.reason", ""))
        if protocol:
            metadata["frozen_settings"] = protocol
        if ignored:
            metadata["config_not_applied"] = ignored
        if mismatches:
            metadata["environment_mismatches"] = mismatches
        if market.failures:
            metadata["skipped_files"] = dict(market.failures)
        lost_hourly = dict(getattr(market, "hourly_problems", {}))  # built on the range proxy
        if lost_hourly:
            metadata["hourly_problems"] = lost_hourly
        with mlflow.start_run(run_name=f"serve-{as_of}"):
            log_context(cfg, "serve", {"as_of": as_of.isoformat(),
                                       "model_version": str(mv.version)})
            # what was applied: the model's bundled config with its frozen settings (the
            # serve-time file's config/resolved.json is not it), and the manifest's metadata
            # (frozen settings, config not applied, a refused gate, skipped files)
            mlflow.log_dict(bundle["config"], "config/applied.json")
            mlflow.log_dict(metadata, "manifest_metadata.json")
            mlflow.log_param("feature_fingerprint", fingerprint)
            published = publish_partition(params, root, as_of, metadata, updates=records,
                                          code_version=code_version(), force=force)
            if not published.created:
                records = _stored_records(published.path)
            mlflow.log_metrics({"assets": len(params), "created": int(published.created),
                                "revision": published.revision, "updates": len(records),
                                "fallbacks": int(params["flag_fallback"].sum()),
                                "stale": int(params["flag_stale"].sum()),
                                "skipped_files": len(market.failures)})
            mlflow.log_table(params.astype({"as_of": str}), "parameters.json")
    # the day before's partition and a same-day one being revised, each read as the state
    upgraded = dict.fromkeys(step for frame in (prev, in_force) if frame is not None
                             for step in frame.attrs.get("upgraded", []))
    notes = [*pit.warnings,
             *(f"{a}: {why}; frozen (LTV 0, LT and LB held) until its data returns, or list "
               "it in serving.retired_assets to stop publishing it" for a, why in absent.items()),
             *(f"{a}: {why}; frozen (LTV 0, LT and LB held)" for a, why in distrusted.items()),
             *([f"{as_of} served after {later[-1]} was published: the later days' thresholds "
                "were computed without this day's admitted LTVs (LATEST stays on "
                f"{later[-1]}; serve the later days again with --force to carry them)"]
               if later else []),
             *(f"a partition of an older schema read as the state, upgraded in memory ({step})"
               for step in upgraded),
             *(f"version {mv.version} has no {tag} tag (registered before "
               "integrity checks): not verified" for tag in unverified),
             *(f"model version {mv.version}: {m}" for m in mismatches),
             *([f"{cfg.registry.model_name}: {moved}"] if moved else []),
             *([f"version {mv.version} serves as @champion although its gate refused it "
                f"({metadata['gate_refused']}); " + refused_note(bundle, refused)]
               if "gate_refused" in metadata else []),
             *tail_lines(bundle, params)]
    return ServeResult(published, params, str(mv.version), records, swept,
                       dict(market.failures), notes, ignored, chosen)


class ServeConfigError(ValueError):
    """A serve-time override of a value the served model decides by its bundled config."""


class ModelLoadError(RuntimeError):
    """A registered version whose verified files fail to load (its code or bundle)."""


class ModelUnavailableError(RuntimeError):
    """No model could be served, and the day was published with every asset frozen on the
    parameters in force (:func:`freeze_without_model`); ``published`` is that partition."""

    def __init__(self, reason: str, published: Published) -> None:
        super().__init__(reason)
        self.reason, self.published = reason, published


LINEAGE = ("model_name", "model_version", "run_id", "policy_version", "feature_fingerprint")


def freeze_without_model(cfg: Config, root: Path, as_of: dt.date | None, reason: str,
                         keep_going: bool, today: dt.date | None, force: bool,
                         progress: Progress = _noop) -> Published | None:
    """The fail-safe for a missing model: publish ``as_of`` with every asset of the previous
    partition frozen on its parameters in force (LTV 0, IMF 1, LT and LB held, a pending
    change kept, not stale: the data may be fine), each row's reason naming ``reason``.

    The rows keep the lineage of the version that computed the held parameters; the manifest
    says the model was unavailable. Without an explicit ``as_of`` the day is the last
    complete one in the data, as for a serve. Nothing is published (None) when nothing was
    published before (no parameters to hold: no position can exist), when the data cannot
    tell the day, or when the day is already published and ``force`` is False (a serve that
    worked before the model broke is not overwritten).
    """
    if not current_partitions(root):
        return None
    if as_of is None:
        try:
            as_of = load_as_of(cfg.paths.data_dir, cfg.data.assets, None, keep_going, today,
                               cfg.data.max_file_mb, cache=candle_cache(cfg)).as_of
        except Exception:  # the model's error is the one to report
            return None
    prev = previous_parameters(root, as_of)
    current = current_partition(root, as_of)
    if prev is None or (current is not None and not force):
        return None
    retired = set(cfg.serving.retired_assets)
    reasons = {a: f"model unavailable: {reason}" for a in prev["asset"] if a not in retired}
    rows = frozen_rows(cfg, prev, reasons, as_of, fresh=set(reasons))
    held = prev.set_index("asset")
    for col in LINEAGE:
        rows[col] = rows["asset"].map(held[col])
    params = with_previous(rows, prev)
    in_force = read_partition(current[1], upgrade=True) if current is not None else prev
    records = update_records(params, in_force, revision=current[0] + 1 if current else 1)
    progress("publish", 0, 1)
    metadata = {"model_name": cfg.registry.model_name, "model_unavailable": reason,
                "fail_safe": "every asset frozen on the parameters in force: LTV 0, LT and "
                             "LB held"}
    with mlflow.start_run(run_name=f"serve-{as_of}"):
        log_context(cfg, "serve", {"as_of": as_of.isoformat(), "model_version": "none"})
        published = publish_partition(params, root, as_of, metadata, updates=records,
                                      code_version=code_version(), force=force)
        mlflow.log_metrics({"assets": len(params), "created": int(published.created),
                            "revision": published.revision, "fallbacks": len(params)})
    return published


# Sections the registered model reads from its own bundled config (serving/apply.py), so a
# serve-time value of these is not applied.
BUNDLED = ("policy", "data.stale_after_days", "features")
# what the serving operator sets whatever the model: the retention of outputs/features/
SERVE_TIME = ("features.store_keep_latest",)


def model_features(cfg: Config, bundle: Mapping[str, Any]) -> FeaturesConfig:
    """The feature settings the served model reads its panel with: those it was registered
    with (every one changes what a column holds), the serve-time config's for
    :data:`SERVE_TIME` keys and for any the bundle predates."""
    registered = {k: v for k, v in dict(bundle["config"].get("features") or {}).items()
                  if f"features.{k}" not in SERVE_TIME}
    return FeaturesConfig.model_validate({**cfg.features.model_dump(), **registered})


def _leaves(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}.{key}"))
        return out
    return {prefix: tree}


def config_not_applied(cfg: Config, bundled: dict[str, Any],
                       environ: Mapping[str, str] | None = None,
                       frozen: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Serve-time config values the model ignores: ``{key: {"serve": v, "model": w}}``.

    A difference set by a ``VOLMARGIN__*`` environment variable is refused
    (:class:`ServeConfigError`): whoever set it expects it to act. One from the config file
    (edited since the model was registered) is returned, recorded in the manifest and
    reported; retrain to apply it. Not the settings the policy protocol froze at
    registration (``frozen``, dotted keys): there the file's value is where the protocol's
    choice starts on the selection period, and a retrain chooses again
    (:func:`frozen_settings` reports them).
    """
    env = os.environ if environ is None else environ
    mine = cfg.resolved()
    diff: dict[str, dict[str, Any]] = {}
    for dotted in BUNDLED:
        section, *rest = dotted.split(".")
        here, there = mine.get(section), bundled.get(section, {})
        for key in rest:
            here, there = here.get(key) if here else None, there.get(key) if there else None
        model_leaves = _leaves(there, dotted)
        for key, value in _leaves(here, dotted).items():
            if key in SERVE_TIME:
                continue
            if key in model_leaves and model_leaves[key] != value:
                diff[key] = {"serve": value, "model": model_leaves[key]}
    from_env = sorted(k for k in diff if any(
        f"{ENV_PREFIX}{'__'.join(k.split('.')[:n])}".upper() in env
        for n in range(1, k.count(".") + 2)))
    if from_env:
        raise ServeConfigError(
            "serve-time override of values the served model fixes at registration: "
            + "; ".join(f"{k} = {diff[k]['serve']!r} (model: {diff[k]['model']!r})"
                        for k in from_env)
            + ". The published parameters would not use them: unset the environment "
            "variable(s), or retrain with the new values.")
    return {k: v for k, v in diff.items() if k not in (frozen or {})}


def frozen_settings(cfg: Config, frozen: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings the policy protocol froze at registration (dotted keys → the value the
    model applies) that the serve-time config gives otherwise: ``{key: {"config": v,
    "model": w}}``."""
    mine = cfg.resolved()
    out: dict[str, dict[str, Any]] = {}
    for key, value in frozen.items():
        here: Any = mine
        for part in key.split("."):
            here = here.get(part) if isinstance(here, dict) else None
        if here != value:
            out[key] = {"config": here, "model": value}
    return out


def locate_policy(cfg: Config, mv: Any) -> tuple[Path, list[str]]:
    """(stored model directory, integrity tags it lacks) of a registered version.

    The stored files are found under this project's artifact root (a moved project still
    serves) and checked against the hashes recorded at registration before anything of the
    model's code is imported.
    """
    directory = model_dir(mv, artifact_root(cfg.paths.mlruns_dir))
    return directory, verify_integrity(mv, directory)


def absent_assets(prev: pd.DataFrame | None, present: set[str], retired: list[str]
                  ) -> dict[str, str]:
    """Asset → reason for each asset of the previous partition that today's data does not
    have (its daily file removed, renamed or not synced; dropped from ``data.assets``) and
    that is not ``retired``. Leaving it out would lose its thresholds in force, its announced
    change and its admitted LTVs: back a day later, it would take its target LT at once, with
    no notice and below LTVs admitted days before. So it is carried, frozen, in every
    partition until its data returns or it is retired on purpose."""
    if prev is None:
        return {}
    day = str(prev["as_of"].iloc[0])[:10] if "as_of" in prev and len(prev) else "before"
    return {a: f"no data for {a} in this update (published {day})"
            for a in sorted(set(prev["asset"]) - present - set(retired))}


def hourly_lost(market: Any, as_of: dt.date, stale_after_days: int, assets: list[str]
                ) -> dict[str, str]:
    """Asset → reason for each of ``assets`` whose hourly file is there but unusable (lost:
    :attr:`features.loaders.MarketData.hourly_problems`), stale while its daily candles are
    fresh (the ``hourly`` rows of :func:`features.freshness.freshness_report`), or behind
    them: its candles end before the as-of day's last hour (23:00 UTC), as when the hourly
    feed lags the daily one by hours or days. Built on the daily-range proxy instead (a day
    with no or few hours), its covered loss would jump (the proxy runs ~3.7x the hourly loss
    on ETH) and its margins with it, an LT cut announced on a data fault; built on the hours
    it has, a crash in the missing ones would go unseen, unflagged. Such an asset is frozen
    instead, as one whose daily candles lag (:func:`serving.apply.asset_parameters`). Removing the
    hourly file on purpose margins the asset on the proxy (flagged), as one that never had
    hourly candles."""
    report = freshness_report(market, as_of, stale_after_days)
    hourly = report[(report["kind"] == "hourly") & report["stale"]
                    & report["name"].isin(assets)]
    out: dict[str, str] = {}
    for row in hourly.itertuples():
        if row.problem:
            seen = f"lost ({row.problem})"
        elif pd.notna(row.last_date):
            seen = (f"stale (last {row.last_date.date()}, {row.days_since_update} days old; "
                    f"stale after {stale_after_days})")
        else:
            seen = "stale (none left)"
        out[row.name] = (f"hourly candles of {row.name} {seen}: restore them, or remove the "
                         "file to margin the asset on the daily-range proxy")
    last_hour = pd.Timestamp(as_of) + pd.Timedelta(hours=23)
    for name in assets:
        frame = market.hourly.get(name)
        if name in out or frame is None or not len(frame):
            continue
        last = frame.index.max()
        if last < last_hour:
            out[name] = (f"hourly candles of {name} end at {last:%Y-%m-%d %H:%M} UTC, before "
                         f"the as-of day's last hour ({last_hour:%Y-%m-%d %H:%M}): the day's "
                         "covered loss would miss its last hours; restore them, or remove "
                         "the file to margin the asset on the daily-range proxy")
    return out


def unvalidated(bundle: dict[str, Any], assets: list[str]) -> dict[str, str]:
    """Asset → reason for each of ``assets`` that the model's forecaster failed in the
    walk-forward it was selected on (``failed_assets`` in the bundle; none in bundles written
    before it): its policy was never backtested there, so a plausible-looking forecast of
    the day does not make its margins trustworthy."""
    failed = bundle.get("failed_assets") or {}
    return {a: (f"the model's forecaster failed {a} in its walk-forward ({failed[a]}): its "
                "margins were never validated; a retrain that validates it lifts this")
            for a in assets if a in failed}


def refused_by_gate(tags: Mapping[str, str]) -> bool:
    """Whether a model version's own gate refused it (tag ``gate.passed``: ``false``)."""
    return str(tags.get("gate.passed", "")).lower() == "false"


def refused_note(bundle: Mapping[str, Any], refused: Mapping[str, str]) -> str:
    """What the serve did with the assets a refused champion was not acceptable on: frozen now
    (``refused``), or already frozen for another reason (stale, never validated)."""
    listed = sorted(bundle.get("not_acceptable") or {})
    if not listed:
        return "no asset was refused on its own, none is frozen for it"
    now = sorted(refused)
    before = [a for a in listed if a not in refused]
    parts = ([f"frozen where its policy was not acceptable: {', '.join(now)}"] if now else [])
    parts += ([f"not acceptable and already frozen: {', '.join(before)}"] if before else [])
    return "; ".join(parts)


def _reconciled(name: str) -> str | None:
    """:func:`serving.ops.registry.reconcile_alias`, never fatal: a registry that cannot be
    written to records nothing, and the serve says so rather than not publishing."""
    try:
        return reconcile_alias(name)
    except Exception as exc:  # the registry's own error (MLflow, SQLite): said, not fatal
        return f"could not check @champion against its history ({type(exc).__name__}: {exc})"


def gate_refused(bundle: dict[str, Any], tags: Mapping[str, str], version: str,
                 assets: list[str]) -> dict[str, str]:
    """Asset → reason for each of ``assets`` on which a champion that its own gate refused
    (tag ``gate.passed`` false: the store's first version, promoted so that a fresh install
    can serve, ``registry.gate.promote_first``; or a version set by hand) was not acceptable
    in the backtest the gate judged (``not_acceptable`` in the bundle; none in bundles written
    before it). Its margins there failed the lender's acceptance test, so the asset gets the
    fail-safe, as an asset the model never validated does, until a version passes the gate."""
    if not refused_by_gate(tags):
        return {}
    refused = bundle.get("not_acceptable") or {}
    return {a: (f"version {version} is champion although its gate refused it, and its policy "
                f"was not acceptable on {a} in the backtest the gate judged"
                f"{f' ({refused[a]})' if refused[a] else ''}; a version that passes the gate "
                "lifts this")
            for a in assets if a in refused}


def failed_assets(failures: dict[str, str]) -> dict[str, str]:
    """Asset → reason for each data file that failed to load (``keep_going``), by file name:
    ``crypto/daily/SOL.csv.gz`` and ``iv/DVOL_SOL.csv.gz`` are SOL's (macro names match none)."""
    return {re.sub(r"^dvol_", "", Path(name).name.split(".")[0], flags=re.IGNORECASE):
            f"data file {name} failed to load" for name in failures}


def tail_lines(bundle: Mapping[str, Any], params: pd.DataFrame) -> list[str]:
    """One warning naming the assets a tail-driven policy published on the FHS tail of its σ
    (no tail forecast: :mod:`serving.tail_source`), and one for those its tail model froze."""
    tail = bundle.get("tail")
    if not tail or not len(params):
        return []
    model, reasons = str(tail["model"]), params["reason"].fillna("").astype(str)
    fell = sorted(params.loc[reasons.str.contains(FALLBACK_NOTE.format(model=model),
                                                  regex=False), "asset"].astype(str))
    broke = sorted(params.loc[reasons.str.contains(FAILED_NOTE.format(model=model),
                                                   regex=False), "asset"].astype(str))
    out = []
    if fell:
        out.append(f"tail-driven policy: no {model} tail forecast for {len(fell)} asset(s), "
                   f"published on the FHS tail of the σ forecast: {', '.join(fell)}")
    if broke:
        out.append(f"tail-driven policy: the {model} tail model failed for {len(broke)} "
                   f"asset(s), frozen (LTV 0, LT and LB held): {', '.join(broke)}")
    return out


def _with_lineage(params: pd.DataFrame, cfg: Config, mv: Any, fingerprint: str) -> pd.DataFrame:
    params["model_name"] = str(mv.tags.get("forecaster", "unknown"))
    params["model_version"] = str(mv.version)
    params["run_id"] = str(mv.run_id)
    params["policy_version"] = f"{cfg.registry.model_name}/{mv.version}"
    params["feature_fingerprint"] = fingerprint
    return params


def _stored_records(path: Path) -> list[dict[str, Any]]:
    """The update records of an already published partition (none before updates.json)."""
    file = path / UPDATES_NAME
    return json.loads(file.read_text())["records"] if file.is_file() else []

"""Where the data lives and how features are built: paths, data, features sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from configs.base import _Strict


class PathsConfig(_Strict):
    data_dir: Path = Path("data/market")
    outputs_dir: Path = Path("outputs")
    mlruns_dir: Path = Path("mlruns")


class CandleCacheConfig(_Strict):
    """Validated-candle cache (features/candle_cache.py): an unchanged data file is not parsed
    again, an appended one only in its new rows; results are the same as without it."""

    enabled: bool = True
    dir: Path | None = None  # None: <paths.outputs_dir>/cache/candles
    verify: bool = False     # hash every data file and cache entry on each load (slower)


class DataConfig(_Strict):
    assets: list[str] | None = None
    stale_after_days: int = Field(3, ge=0)
    max_file_mb: float = Field(100.0, gt=0)  # larger data files (on disk or decompressed) are
                                             # refused unread; largest real one: 4.5 MB raw
    cache: CandleCacheConfig = CandleCacheConfig()


class FeaturesConfig(_Strict):
    """Thresholds of the feature panel. Windows that appear in column names (``corr_spx_90d``,
    ``amihud_30d``) are fixed in ``features/`` so that a name never lies about its window;
    ``har_windows`` names its columns and must match the schema (``har_rv_{1,7,30}d``)."""

    har_windows: list[int] = [1, 7, 30]
    corr_min_obs: int = Field(15, ge=3)  # valid pairs per 30 days of a corr/beta window, else NaN
    # macro closes print ~20-22 UTC: usable the next day; never 0, at which the US 10y yield
    # (FRED's DGS10 of day D is published on a later business day) would be read on D itself
    macro_lag_days: int = Field(1, ge=1)
    macro_max_carry_days: int = Field(7, ge=0)  # a macro value older than this is stale → NaN
    vix_regime_level: float = Field(25.0, gt=0)  # vix_regime: lagged VIX close above this
    liquidity_min_obs: int = Field(20, ge=2)  # valid days in a 30-day volume / Amihud window
    min_hours_for_rv: int = Field(20, ge=1, le=24)
    liquidation_delay_hours: int = Field(1, ge=1, le=24)  # H: time to liquidate a position
    # an exchange outage (missing hours, no trading) up to this long is spanned by a loss
    # window: the move across it is exposure no liquidation could cut (features.losses)
    outage_bridge_hours: int = Field(24, ge=0, le=72)
    update_interval_days: int = Field(1, ge=1)            # U: parameters hold this long
    # Retention of outputs/features/: one full-history panel per as-of otherwise piles up
    # (~420 MB a day at 1,000 assets); the latest few cover a rerun and a retrain + serve.
    store_keep_latest: int = Field(3, ge=1)

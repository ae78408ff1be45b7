r"""Range-based variance estimators from daily OHLC candles.

All outputs are daily decimal² (variance of the one-day log return). Notation for day :math:`t`:
:math:`O, H, L, C` the open, high, low and close, and

.. math::

    h = \ln(H/O), \quad l = \ln(L/O), \quad c = \ln(C/O), \quad
    o_t = \ln(O_t / C_{t-1}) \ \text{(the "overnight" return)}.

Crypto trades around the clock, so a UTC day's open equals the previous close up to a tick and
:math:`o_t \approx 0`; the one estimator that models an overnight gap (Yang-Zhang) still uses it.

These estimators stand in for intraday realized variance where no hourly data exists (on
the embedded data, AAVE, and days an hourly file does not cover). The panel's proxy is
Garman-Klass (``gk_var``); how close each one comes to hourly RV on BTC/ETH is measured
by :func:`features.summary.proxy_comparison` and written in ``benchmarks/README.md``. All
of them are biased low on a discretely observed path (the true high/low is missed between
prints).

References
----------
Parkinson (1980), J. Business 53(1); Garman & Klass (1980), J. Business 53(1);
Rogers & Satchell (1991), Ann. Appl. Probab. 1(4); Yang & Zhang (2000), J. Business 73(3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_FOUR_LN2 = 4.0 * np.log(2.0)


def parkinson(high: pd.Series, low: pd.Series) -> pd.Series:
    r"""Parkinson (1980) high-low variance of one period.

    .. math:: \hat\sigma^2_P = \frac{(h - l)^2}{4 \ln 2} = \frac{\ln(H/L)^2}{4\ln 2}

    Unbiased for driftless Brownian motion observed continuously (:math:`E[\ln(H/L)^2] =
    4\ln 2\,\sigma^2`), about 5.2 times as efficient as the squared close-to-close return.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> var = parkinson(pd.Series([np.exp(0.1)]), pd.Series([1.0])).iloc[0]
    >>> round(float(var * 4 * np.log(2)), 12)  # ln(H/L)² = 0.1²
    0.01
    """
    return np.log(high / low) ** 2 / _FOUR_LN2


def garman_klass(
    open_: pd.Series, high: pd.Series, low: pd.Series, close: pd.Series
) -> pd.Series:
    r"""Garman-Klass (1980) range variance of one period.

    .. math::
        \hat\sigma^2_{GK} = \tfrac12 \ln(H/L)^2 - (2\ln 2 - 1)\,\ln(C/O)^2

    Unbiased for driftless Brownian motion observed continuously, and about 7.4 times as
    efficient as the squared close-to-close return. Discrete sampling biases it low; it is used
    here as the realized proxy where no intraday data exists, and that bias is measured against
    intraday RV on BTC/ETH (see ``benchmarks/README.md``).
    """
    hl = np.log(high / low)
    co = np.log(close / open_)
    return 0.5 * hl**2 - (2.0 * np.log(2.0) - 1.0) * co**2


def rogers_satchell(
    open_: pd.Series, high: pd.Series, low: pd.Series, close: pd.Series
) -> pd.Series:
    r"""Rogers-Satchell (1991) drift-independent range variance of one period.

    .. math:: \hat\sigma^2_{RS} = h\,(h - c) + l\,(l - c)
              = \ln\tfrac{H}{C}\ln\tfrac{H}{O} + \ln\tfrac{L}{C}\ln\tfrac{L}{O}

    Unbiased for Brownian motion *with any drift* observed continuously; never negative
    (:math:`h \ge \max(0, c)`, :math:`l \le \min(0, c)`).
    """
    h = np.log(high / open_)
    lo = np.log(low / open_)
    c = np.log(close / open_)
    return h * (h - c) + lo * (lo - c)


def yang_zhang_k(window: int) -> float:
    r"""Yang-Zhang's variance-minimising weight :math:`k = 0.34 / (1.34 + (n+1)/(n-1))`."""
    if window < 2:
        raise ValueError(f"Yang-Zhang needs a window of at least 2 days, got {window}")
    return 0.34 / (1.34 + (window + 1) / (window - 1))


def yang_zhang(
    open_: pd.Series, high: pd.Series, low: pd.Series, close: pd.Series, window: int
) -> pd.Series:
    r"""Yang-Zhang (2000) variance over the trailing ``window`` days (a multi-period estimator).

    .. math::

        \hat\sigma^2_{YZ} = \hat\sigma^2_o + k\,\hat\sigma^2_c + (1-k)\,\hat\sigma^2_{RS},
        \qquad k = \frac{0.34}{1.34 + \frac{n+1}{n-1}}

    with :math:`\hat\sigma^2_o` and :math:`\hat\sigma^2_c` the sample variances (ddof 1) of
    the overnight returns :math:`o_t = \ln(O_t/C_{t-1})` and the open-to-close returns
    :math:`c_t = \ln(C_t/O_t)` over days :math:`t-n+1..t`, and :math:`\hat\sigma^2_{RS}` the
    mean Rogers-Satchell variance over the same days. Unbiased under drift and opening jumps,
    minimum variance among estimators of this form. A window with any missing day (or the first
    day of a series, which has no previous close) is NaN.

    ``open_`` .. ``close`` must be one asset's candles on a complete daily calendar.
    """
    k = yang_zhang_k(window)
    overnight = np.log(open_ / close.shift(1))
    open_close = np.log(close / open_)
    rs = rogers_satchell(open_, high, low, close)
    var_o = overnight.rolling(window, min_periods=window).var(ddof=1)
    var_c = open_close.rolling(window, min_periods=window).var(ddof=1)
    mean_rs = rs.rolling(window, min_periods=window).mean()
    return var_o + k * var_c + (1.0 - k) * mean_rs

"""Direct forecasts of the VaR and ES of the covered loss (protocol: :mod:`models.tail.base`).

Registered aliases (:data:`models.tail.registry.TAIL_REGISTRY`, settings in the ``tail``
section of the config): ``fhs_ewma``, ``fhs_garch`` (filtered historical simulation),
``evt_garch`` (McNeil-Frey peaks over threshold), ``qr_har`` (pooled log quantile
regression), ``caviar`` (symmetric absolute value CAViaR) and ``tail_nn`` (pooled Lightning
network trained by the FZ0 loss on top of a classical tail scale).

Walk-forward, scoring and backtests over the selection and evaluation periods::

    from configs.schema import load_config
    from pipelines.evaluation.tail_compare import run_tail_backtest

    forecasts, tables = run_tail_backtest(panel, load_config())  # panel: features.build
    tables["fz0_evaluation"], tables["dm"], tables["backtests"]
"""

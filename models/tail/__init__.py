"""Direct forecasts of the VaR and ES of the covered loss (protocol: :mod:`models.tail.base`).

Registered aliases (:data:`models.tail.registry.TAIL_REGISTRY`, settings in the ``tail``
section of the config): ``fhs_ewma``, ``fhs_garch`` (filtered historical simulation),
``evt_garch`` (McNeil-Frey peaks over threshold), ``qr_har`` (pooled log quantile
regression), ``caviar`` (symmetric absolute value CAViaR) and ``tail_nn`` (pooled Lightning
network on top of a classical tail scale: a learned scale with the empirical tail of the
standardized losses by default, or VaR/ES multipliers trained by the FZ0 loss).

Walk-forward, scoring and backtests over the selection and evaluation periods live a layer
up, in ``pipelines.evaluation.tail_compare.run_tail_backtest`` (run by ``volmargin tail``):
models never import the orchestration that evaluates them.
"""

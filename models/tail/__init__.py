"""Direct forecasts of the VaR and ES of the covered loss (see :mod:`models.tail.base`)."""

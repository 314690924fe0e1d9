"""Numbers about a finished run: performance (returns, Sharpe, drawdown), benchmark-relative figures,
report curves, acceptance gates, signal accuracy and risk-event counts. Pure functions of arrays."""

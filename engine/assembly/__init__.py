"""The one assembly point: strategy, inputs, fill rules, market profile, risk pipeline built from a typed
``RunConfig`` for every mode (``build``), and ``tradeloop backtest`` itself (``backtest``)."""

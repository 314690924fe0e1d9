"""Example strategies, written as a user writes one (``from tradeloop import Strategy, Param``);
``tradeloop strategies`` lists them and ``tradeloop backtest NAME`` runs one by its module name."""

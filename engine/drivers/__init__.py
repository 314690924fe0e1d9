"""Drivers feed the loop: the backtest driver (merged columnar bars, as fast as Python allows) and the
live driver (bars and ticks as they arrive). Both step the same ``Engine`` in the same event order."""

"""Run folders: the result of a run, the recorder that writes every kind of run (backtest, walk-forward,
live, paper) with one manifest schema, the reader, and ``runs list``."""

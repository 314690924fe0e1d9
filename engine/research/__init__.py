"""Research runs made of many backtests: parameter sweeps, walk-forward windows with retraining,
stitching windows into one run, and the executors (serial, processes, Dask) they run on."""

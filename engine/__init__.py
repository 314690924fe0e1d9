"""tradeloop's engine, in rooms with one job each (lower floors first; nothing imports a floor above it):

``config`` typed run configuration -> ``telemetry`` logs and progress -> ``loop`` the event loop and
Strategy API -> ``metrics`` -> ``runs`` results and the run recorder -> ``drivers`` backtest and live
drivers -> ``report`` HTML reports -> ``assembly`` building runs from config -> ``research`` sweeps and
walk-forward -> ``live`` live and paper sessions -> ``cli``.

Strategy authors import from the top: ``from tradeloop import Strategy, Param``.
"""

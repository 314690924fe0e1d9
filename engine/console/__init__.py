"""The operator console: a small web page over a live or paper session's state file.

It reads the snapshot and events the engine publishes in the SQLite state file (risk/store.py) and
streams them to the browser over server-sent events; every action (approve, reject, halt, resume,
reset, cancel, kill) goes through the one operator command path, ``tradeloop.risk.control.Operator``,
the same one the ``tradeloop review`` / ``tradeloop risk`` commands use. Served by
``python -m tradeloop.engine.console`` / ``tradeloop console`` (serve.py).
"""

"""The ``tradeloop`` command line: argument parsing and the commands; a user's mistake is one line and
exit status 2. The only place that may import every other room."""

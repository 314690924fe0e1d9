"""The risk layer every order passes: pre-trade checks, large-order review by a person, limit-move halts,
drawdown stops and stale-data guards; its config section (``config``) and factory (``build``)."""

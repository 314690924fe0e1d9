"""A run's typed configuration: ``RunConfig`` (TOML + ``--set`` overrides) and its sections. A bad key or
value is a ``tradeloop.errors.ConfigError`` naming it."""

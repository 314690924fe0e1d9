"""tradeloop engine: the event loop, the Strategy API, accounting, runners, metrics and the CLI."""
from .context import Context
from .strategy import Param, Strategy

__all__ = ["Context", "Param", "Strategy"]

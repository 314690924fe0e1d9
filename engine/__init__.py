"""tradeloop engine: the event loop, the Strategy API, accounting, runners, metrics and the CLI."""
from .context import Context
from .strategy import Param, PredictorSpec, Strategy

__all__ = ["Context", "Param", "PredictorSpec", "Strategy"]

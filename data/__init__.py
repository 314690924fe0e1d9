"""tradeloop data: market value types, loaders and validation, the Parquet catalog, indicators.

polars allocates through jemalloc, which by default keeps freed pages for a while; a backtest
reads a large file once and then lives with its arrays, so we ask jemalloc to hand freed
pages back at once (it halves the peak memory of a 1M-bar run). Set ``_RJEM_MALLOC_CONF``
yourself to choose otherwise; it only takes effect if polars is not imported yet.
"""
import os

os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

"""The prediction service: registry models served to several engines, with dynamic batching.

``tradeloop serve`` (engine/cli/serve.py) runs :class:`server.PredictionServer`: a binary TCP
protocol (``protocol.py``, one asyncio Protocol per connection in ``connection.py``) and an
HTTP/JSON form (``http.py``), a dynamic batcher per model (``batcher.py``), versions loaded,
health-monitored, hot-swapped and rolled back (``slots.py``), Prometheus metrics (``metrics.py``),
a request-head deadline for uvicorn that the console uses too (``head_deadline.py``).
The engine's side is ``remote.py`` (RemoteModel: a served model behind the local Predictor, with
a fallback or halt policy) over ``client.py``. docs/serving.md has the whole picture.
"""

"""Venues behind one contract (``base``): the simulated fill engine (``sim``), the FIX 4.4 adapter
(``remote``, ``fix/``) and the exchange simulator (``exchange``); order types, commission and slippage
models (``costs``) and market rules such as the A-share profile (``profiles``)."""

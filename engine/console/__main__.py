"""``python -m tradeloop.engine.console``: serve the operator console (serve.py)."""
import sys

from tradeloop.engine.console.serve import main

sys.exit(main())

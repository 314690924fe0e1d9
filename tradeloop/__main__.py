"""``python -m tradeloop``: the command line."""
import sys

from tradeloop.engine.cli.main import main

sys.exit(main())

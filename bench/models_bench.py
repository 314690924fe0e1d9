#!/usr/bin/env python3
"""Predictor runtime latency and throughput as JSON: the same as ``tradeloop models bench``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradeloop.models.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""The event loop: ``Engine`` (one timestamp at a time), the ``Strategy`` API and its ``Context``, the
market view, the portfolio and the clock. Imports nothing above it in ``engine``."""

"""The one error type of the data layer: a bad input file or bar, with where and why."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: ``path``, 1-based physical ``line`` (header counted), ``field`` as written, ``reason``."""

    def __init__(self, path: str, line: int, field: str, reason: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.field = field
        self.reason = reason
        super().__init__(f"{self.path}:{self.line}: field {field!r}: {reason}")

    def __reduce__(self):  # keep it picklable (multiprocessing, pytest-xdist)
        """Rebuild from the four attributes, not from the formatted message."""
        return (type(self), (self.path, self.line, self.field, self.reason))

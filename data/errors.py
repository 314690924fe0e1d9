"""The one error type of the data layer: a bad input file or bar, with where and why."""
from __future__ import annotations

import os
import stat
from pathlib import Path


class DataError(ValueError):
    """Bad input data: ``path``, 1-based physical ``line`` (header counted), ``field`` as written, ``reason``.

    ``line`` 0 means the whole file (no line to name) and ``field`` "" no particular field; the
    message leaves them out then, so it always reads ``path[:line][: field 'F']: reason`` on one line.
    """

    def __init__(self, path: str, line: int, field: str, reason: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.field = field
        self.reason = " ".join(str(reason).split())  # one line, whatever a library's message held
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {self.reason}")

    def __reduce__(self):  # keep it picklable (multiprocessing, pytest-xdist)
        """Rebuild from the four attributes, not from the formatted message."""
        return (type(self), (self.path, self.line, self.field, self.reason))


def check_file(path: str | Path, what: str = "input file") -> os.stat_result:
    """``os.stat`` of ``path`` if it is a regular file; else a DataError naming it (checked before any open).

    A directory, a device (``/dev/zero``, ``/dev/urandom``), a FIFO or a socket is refused from its
    type alone, so that nothing blocks on a FIFO or reads a device forever.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(str(path), 0, "", f"{what} not found") from None
    except OSError as e:
        raise DataError(str(path), 0, "", f"cannot open {what}: {e.strerror or e}") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise DataError(str(path), 0, "", "is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "of an unknown type")
        raise DataError(str(path), 0, "", f"is {kind}, not a regular file")
    return st

"""Small shared helpers: integer list parsing and logging set-up."""
from __future__ import annotations

import logging
import re

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_int_list(text: str, *, name: str = "value") -> list[int]:
    """Parse ``"0-4"``, ``"0,2,4"`` or ``"0-2,7"`` into a sorted list of distinct integers.

    Raises ValueError with a one-line message naming ``name`` on anything else.
    """
    values: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"{name}: {text!r} is not a list or range of integers (e.g. 0-4 or 0,2,4)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{name}: range {part!r} is empty (start after end)")
        values.update(range(lo, hi + 1))
    return sorted(values)


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with time, level and logger name."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)

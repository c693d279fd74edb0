"""Named phase timers (veRL's ``marked_timer`` style): ``with timed("learn", timings): ...``."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Adds the seconds spent inside to ``timings["time/<name>"]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[f"time/{name}"] = timings.get(f"time/{name}", 0.0) + time.perf_counter() - start

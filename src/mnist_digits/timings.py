"""Where a command's seconds go: wall-clock seconds per phase, in the order they ran.

    timings = Timings()
    with timings.phase("data"):
        data = load_mnist()
    timings.seconds  # {"data": 1.2}

`train` records its phases (import, data, fit, evaluation, figures, ...) in config.json
and prints them with --verbose, so a slow run says what was slow.
"""

from __future__ import annotations

import contextlib
import os
import time


def seconds_since_process_start() -> float | None:
    """Wall-clock seconds since this process started (Linux /proc), else None. It covers
    what no timer inside the program sees: the interpreter's own start-up and imports."""
    try:
        with open("/proc/self/stat") as handle:
            started_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Timings:
    def __init__(self, whole_process: bool = False):
        """With `whole_process` (the command, not a library call inside a longer session):
        `startup` is the time from the process's start to now, and `rounded` adds `total`."""
        self.seconds: dict[str, float] = {}
        self.whole_process = whole_process and seconds_since_process_start() is not None
        if self.whole_process:
            self.seconds["startup"] = seconds_since_process_start()

    @contextlib.contextmanager
    def phase(self, name: str):
        """Add the block's wall-clock seconds to phase `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        """The phases to 0.01 s, and for a whole process its `total` so far."""
        result = {name: round(value, 2) for name, value in self.seconds.items()}
        if self.whole_process:
            result["total"] = round(seconds_since_process_start(), 2)
        return result


def describe(timings: dict[str, float]) -> str:
    """One line per phase with its share of the total, for `train --verbose`."""
    total = timings.get("total") or sum(v for k, v in timings.items() if k != "total")
    lines = ["Where the seconds went:"]
    for name, value in timings.items():
        share = f"  {value / total:5.1%}" if total and name != "total" else ""
        lines.append(f"  {name:<36} {value:7.2f} s{share}")
    return "\n".join(lines)

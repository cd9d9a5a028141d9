"""Small clocks-and-counters helpers for nodes (no rclpy): input rates, staleness, latency stats.

All times are seconds on a caller-supplied monotonic clock (wall clock: a paused simulation
must still trip the watchdog)."""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["LatencyStats", "RateMeter", "Watchdog"]


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window: float = 2.0):
        self.window = float(window)
        self._times: deque[float] = deque()
        self.count = 0

    def tick(self, now: float) -> None:
        self._times.append(now)
        self.count += 1
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self._times) / self.window

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()


class Watchdog:
    """Tracks when each named input last arrived; reports the stale ones.

    An input never seen is stale (age None) — a node that has never had a camera frame must not
    drive."""

    def __init__(self, timeout: float, inputs: tuple[str, ...]):
        self.timeout = float(timeout)
        self._last: dict[str, float | None] = dict.fromkeys(inputs)

    def feed(self, name: str, now: float) -> None:
        self._last[name] = now

    def age(self, name: str, now: float) -> float | None:
        last = self._last[name]
        return None if last is None else now - last

    def stale(self, now: float) -> dict[str, float | None]:
        """{input: age in s (None = never received)} for every input older than the timeout."""
        out = {}
        for name, last in self._last.items():
            if last is None or now - last > self.timeout:
                out[name] = None if last is None else now - last
        return out

    def reset(self) -> None:
        for name in self._last:
            self._last[name] = None


class LatencyStats:
    """The last `size` samples (ms) and their percentiles."""

    def __init__(self, size: int = 1000):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value_ms: float) -> None:
        self._samples.append(float(value_ms))

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self._samples, float), q)) if self._samples else float("nan")

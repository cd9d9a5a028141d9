"""Small clocks-and-counters helpers for nodes (no rclpy): input rates, staleness, latency stats.

All times are seconds on a caller-supplied monotonic clock (wall clock: a paused simulation
must still trip the watchdog)."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

__all__ = ["LatencyStats", "RateMeter", "SwapTiming", "Watchdog"]


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


class SwapTiming:
    """Where one weights swap's time went, for /diagnostics: `delivery` (the publisher's stamp ->
    the weights callback, i.e. serialization, DDS transport, deserialization and the executor's
    hand-off; wall clocks of one host), then each marked step, and `frame_wait` (the part of the
    steps spent in FrameWindows.pause, letting camera frames run)."""

    def __init__(self, delivery_ms: float | None, clock=time.perf_counter):
        self._clock = clock
        self._last = clock()
        self.delivery_ms = delivery_ms
        self.steps_ms: dict[str, float] = {}
        self.frame_wait_ms = 0.0

    @classmethod
    def received(cls, stamp_sec: int, stamp_nanosec: int, wall: float | None = None) -> SwapTiming:
        """Started when a message stamped (sec, nanosec) on the wall clock arrives. A stamp that
        is unset, in the future or over a minute old (another clock) gives no delivery time."""
        wall = time.time() if wall is None else wall
        delay = wall - (stamp_sec + stamp_nanosec * 1e-9)
        return cls(delay * 1e3 if stamp_sec > 0 and 0.0 <= delay < 60.0 else None)

    def timed_pause(self, pause):
        def timed():
            start = self._clock()
            pause()
            self.frame_wait_ms += (self._clock() - start) * 1e3

        return timed

    def mark(self, step: str) -> None:
        now = self._clock()
        self.steps_ms[step] = (now - self._last) * 1e3
        self._last = now

    def report(self, version: int) -> dict:
        """Keys for /diagnostics (prefix last_swap_)."""
        out = {"last_swap_version": int(version), "last_swap_delivery_ms": self.delivery_ms}
        out.update({f"last_swap_{step}_ms": ms for step, ms in self.steps_ms.items()})
        out["last_swap_frame_wait_ms"] = self.frame_wait_ms
        return out

"""FrameWindows: lets background work (a weights update) run between camera frames, not during one.

No rclpy here. Two threads share one GIL. While a weights update decodes in one thread, the
camera callback in the other loses the GIL at each of its releases (every torch op, every cv2
call) and waits up to the switch interval to get it back: measured here, +4.6 to +19 ms on the
callback's p99 during a swap. Making the callback faster does not help; keeping the two apart
does. The camera callback runs inside `frame()`. The update calls `pause()` between its steps:
- during a frame it waits for the frame to end;
- after it, it goes on at once until the last `guard_fraction` of the frame period before the
  next frame is due (the period counted from the last frame's start, so a slow frame shortens
  the free part of the gap instead of pushing it into the next frame);
- in that guard it waits for the next frame to end;
- when no frames flow it never waits.

Each pause that waits costs the update up to a frame period, so the caller pauses seldom (a
policy node's update: three times, before hashing the payload, before the GIL-holding decode and
before building the network) and keeps each step shorter than the guard (12.5 ms at 20 Hz). A
step that does start just before the guard can still overlap the next frame by the part of it
longer than the guard.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

__all__ = ["FrameWindows"]


class FrameWindows:
    def __init__(self, max_wait: float = 0.1, guard_fraction: float = 0.25, clock=time.monotonic):
        """max_wait: the longest one pause() waits (s), so an update always finishes;
        guard_fraction: the last part of the frame period, before the next frame is due, in which
        no step starts."""
        if not 0.0 <= guard_fraction < 1.0:
            raise ValueError(f"guard_fraction must be in [0, 1), got {guard_fraction!r}")
        self.max_wait = float(max_wait)
        self.guard_fraction = float(guard_fraction)
        self._clock = clock
        self._changed = threading.Condition()
        self._busy = 0
        self._frames_done = 0
        self._last_start: float | None = None
        self._last_end: float | None = None
        self._period: float | None = None  # the time between the last two frame starts

    @contextmanager
    def frame(self):
        """The foreground: one camera frame's work runs inside."""
        now = self._clock()
        with self._changed:
            if self._last_start is not None:
                self._period = now - self._last_start
            self._last_start = now
            self._busy += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._frames_done += 1
                self._last_end = self._clock()
                self._changed.notify_all()

    def pause(self) -> None:
        """Called by the background between two steps: returns when a step may run."""
        with self._changed:
            if self._busy or not self._in_free_window(self._clock()):
                done = self._frames_done  # wait for the end of this frame or of the next one
                self._changed.wait_for(lambda: self._frames_done != done, self.max_wait)

    def _in_free_window(self, now: float) -> bool:
        if self._last_end is None or self._period is None:
            return True  # no frames yet: nothing to keep away from
        if now - self._last_end > 2.0 * self._period:
            return True  # frames stopped (or are far apart): waiting would only delay the update
        return now - self._last_start <= (1.0 - self.guard_fraction) * self._period

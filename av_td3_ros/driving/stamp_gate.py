"""StampGate: a camera frame is answered once per stamp, even when DDS delivers it twice."""

from __future__ import annotations

from collections import deque

__all__ = ["StampGate"]


class StampGate:
    """Answers each frame stamp once: `admit(stamp_ns)` is True the first time a stamp is seen
    (among the last `memory` stamps), False for a repeat."""

    def __init__(self, memory: int = 256):
        self._order: deque[int] = deque()
        self._seen: set[int] = set()
        self._memory = memory

    def admit(self, stamp_ns: int) -> bool:
        if stamp_ns in self._seen:
            return False
        self._seen.add(stamp_ns)
        self._order.append(stamp_ns)
        if len(self._order) > self._memory:
            self._seen.discard(self._order.popleft())
        return True

    def clear(self) -> None:
        """Forget every stamp (a new stamp sequence begins, e.g. a restarted simulator)."""
        self._order.clear()
        self._seen.clear()

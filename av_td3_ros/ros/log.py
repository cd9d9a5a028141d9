"""Route the core's Python `logging` records (e.g. the ActionLimiter's "Action limit active (60%)"
warning) into a ROS node's logger, so they reach /rosout and the console like the node's own."""

from __future__ import annotations

import logging

from rclpy.logging import LoggingSeverity

__all__ = ["Throttle", "forward_python_logging"]


def severity(levelno: int) -> LoggingSeverity:
    """Python logging level -> rclpy severity (rcutils' levels are Python's: DEBUG 10 .. FATAL 50)."""
    return LoggingSeverity(min(max(levelno // 10 * 10, LoggingSeverity.DEBUG), LoggingSeverity.FATAL))


class _RosHandler(logging.Handler):
    def __init__(self, ros_logger):
        super().__init__()
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text, level = f"[{record.name}] {record.getMessage()}", severity(record.levelno)
            # One call line per severity: rclpy caches the severity of each call site.
            if level >= LoggingSeverity.FATAL:
                self._ros_logger.fatal(text)
            elif level >= LoggingSeverity.ERROR:
                self._ros_logger.error(text)
            elif level >= LoggingSeverity.WARN:
                self._ros_logger.warning(text)
            elif level >= LoggingSeverity.INFO:
                self._ros_logger.info(text)
            else:
                self._ros_logger.debug(text)
        except Exception:  # a log call must never break the caller
            self.handleError(record)


def forward_python_logging(
    ros_logger, name: str = "av_td3_ros", level: int = logging.INFO
) -> logging.Handler:
    """Attach a handler to the `name` Python logger that forwards to `ros_logger`. Returns it
    (remove with logging.getLogger(name).removeHandler(handler))."""
    handler = _RosHandler(ros_logger)
    py_logger = logging.getLogger(name)
    py_logger.addHandler(handler)
    py_logger.setLevel(level)
    py_logger.propagate = False
    return handler


class Throttle:
    """Per-key rate limit for log messages: `ready(key, now)` is True at most once per period."""

    def __init__(self, period: float = 2.0):
        self.period = float(period)
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def ready(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        return True

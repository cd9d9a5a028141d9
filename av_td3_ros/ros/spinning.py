"""How our node programs run: rclpy's own signal handling off, SIGINT/SIGTERM set an event, the
executor spins in a thread, and the main thread waits (Python runs signal handlers there only),
so a node can do its last act (a brake, a checkpoint) before the executor is shut down."""

from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException

__all__ = ["stop_event", "spin_until_stopped", "stop_spinning"]


def stop_event() -> threading.Event:
    """An event that SIGINT and SIGTERM set (call after rclpy.init with SignalHandlerOptions.NO)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _spin(executor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def spin_until_stopped(executor, stop: threading.Event) -> threading.Thread:
    """Spin `executor` in a thread until `stop` is set, the spinning ends or rclpy shuts down."""
    spinner = threading.Thread(target=_spin, args=(executor,), name="executor", daemon=True)
    spinner.start()
    while not stop.wait(0.2) and spinner.is_alive() and rclpy.ok():
        pass
    return spinner


def stop_spinning(executor, spinner: threading.Thread, timeout: float = 15.0) -> bool:
    """Shut the executor down and wait until no callback runs any more: only then may the node be
    destroyed. A 2 s limit was exceeded on a loaded machine, and destroying the node under a
    running callback raised 'cannot use Destroyable because destruction was requested' in an
    executor task. Returns False if callbacks were still running after `timeout` seconds."""
    done = executor.shutdown(timeout_sec=timeout)
    spinner.join(timeout=timeout)
    return bool(done) and not spinner.is_alive()

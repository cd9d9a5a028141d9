"""FrameWindows: a weights update's steps run in the gaps between camera frames, never for long
during one, and an update is never held up when no frames flow."""

import threading
import time

from av_td3_ros.driving.frame_windows import FrameWindows


def _frame_in_thread(windows: FrameWindows, seconds: float) -> threading.Thread:
    started = threading.Event()

    def run():
        with windows.frame():
            started.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(5)
    return thread


# "At once" bounds are 50 ms: a wrong wait here lasts max_wait (>= 0.1 s), and a loaded CI
# machine stalls a thread for tens of ms.
def _timed_pause(windows: FrameWindows) -> float:
    start = time.monotonic()
    windows.pause()
    return time.monotonic() - start


def test_without_frames_a_pause_returns_at_once():
    windows = FrameWindows()
    assert _timed_pause(windows) < 0.05
    with windows.frame():
        pass
    assert _timed_pause(windows) < 0.05  # one frame gives no period yet: nothing to wait for


def test_during_a_frame_a_pause_waits_for_its_end():
    windows = FrameWindows(max_wait=2.0)
    frame = _frame_in_thread(windows, 0.2)
    waited = _timed_pause(windows)
    assert 0.15 <= waited < 1.0, waited
    frame.join()


def test_a_pause_never_waits_longer_than_max_wait():
    windows = FrameWindows(max_wait=0.1)
    frame = _frame_in_thread(windows, 1.0)
    waited = _timed_pause(windows)
    assert 0.08 <= waited < 0.5, waited
    frame.join()


def test_early_in_a_gap_it_goes_late_in_a_gap_it_waits_for_the_next_frame():
    windows = FrameWindows(max_wait=2.0, guard_fraction=0.25)
    for _ in range(3):  # frames every 200 ms, 10 ms each
        with windows.frame():
            time.sleep(0.01)
        time.sleep(0.19)
    # Now ~190 ms after the last frame's end (of a 200 ms period): late in the gap.
    next_frame = threading.Timer(0.05, lambda: _frame_in_thread(windows, 0.05).join())
    next_frame.start()
    waited = _timed_pause(windows)
    next_frame.join()
    assert 0.08 <= waited < 1.0, waited  # the next frame (at +50 ms, 50 ms long) had to end first
    assert _timed_pause(windows) < 0.05  # right after that frame: early in the gap, at once


def test_when_frames_stop_a_pause_no_longer_waits():
    windows = FrameWindows(max_wait=2.0)
    for _ in range(3):
        with windows.frame():
            pass
        time.sleep(0.05)
    time.sleep(0.15)  # more than two periods without a frame
    assert _timed_pause(windows) < 0.05


def _overlap_share(max_wait: float) -> float:
    """Share of 2 ms background steps that overlapped a frame, with 20 Hz frames of 10 ms."""
    windows = FrameWindows(max_wait=max_wait)
    frames: list[tuple[float, float]] = []
    steps: list[tuple[float, float]] = []
    done = threading.Event()

    def camera():
        tick = time.monotonic()
        while not done.is_set():
            with windows.frame():
                start = time.monotonic()
                time.sleep(0.01)
                frames.append((start, time.monotonic()))
            tick += 0.05
            time.sleep(max(0.0, tick - time.monotonic()))

    thread = threading.Thread(target=camera)
    thread.start()
    time.sleep(0.2)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        windows.pause()
        start = time.monotonic()
        while time.monotonic() - start < 0.002:  # a 2 ms step of work
            pass
        steps.append((start, time.monotonic()))
    done.set()
    thread.join()
    overlapping = sum(1 for a, b in steps if any(a < f_end and f_start < b for f_start, f_end in frames))
    return overlapping / len(steps)


def test_background_steps_keep_out_of_frames_and_would_not_without_the_windows():
    gated, ungated = _overlap_share(max_wait=0.1), _overlap_share(max_wait=0.0)
    print(f"steps overlapping a frame: {gated:.1%} with FrameWindows, {ungated:.1%} without")
    assert ungated >= 0.1  # frames take 20 % of the time: a step that never waits overlaps them
    assert gated <= 0.03

"""CommandGate: the last thing between the policy and a real vehicle in deploy mode.

Every command passes `update(now, steering_angle, acceleration, current_speed)`; what comes out
holds these limits against the previous output, whatever goes in (NaN, inf, huge values, time
going backwards, e-stop and heartbeat flapping; fuzzed in test/test_vehicle_gate.py):

    |steering_angle|                    <= max_steering_angle
    |steering_angle - previous| / dt    <= max_steering_rate
    -max_deceleration <= acceleration   <= max_acceleration
    |acceleration - previous| / dt      <= max_jerk
    0 <= speed                          <= max_speed

where dt = min(now - time of the previous update, max_step). At or above max_speed (measured) a
positive acceleration is taken down to 0 as fast as max_jerk allows. A call whose time is not
later than the previous one (or not finite) repeats the previous output unchanged; the first call
outputs straight wheels, acceleration 0 and the measured speed.

Stops. An e-stop (`estop(True, now)`) and a lost heartbeat (none for longer than
`heartbeat_timeout`, when that is > 0) LATCH a stop: it lasts until `release(now)` succeeds, which
it does only while the e-stop input is False and the heartbeat is alive. Release is a method of
its own so the caller can authenticate it; an `estop(False)` message never releases. Every new
stop (an e-stop pressed, i.e. its input going to True, or the heartbeat lost) gets the next
`stop_id`, so an authenticated release names the stop it releases (av_td3_ros.vehicle.release)
and can never be replayed against a later one. Before the
first heartbeat the gate holds the car too, without latching (the first heartbeat arms it).
While stopped the output ignores the policy:
- the steering angle stays where it was;
- a positive acceleration falls at max_jerk to 0 (cutting the throttle first), then the
  acceleration ramps at stop_jerk to -stop_deceleration and stays there (default -2.5 m/s^2 at
  1.5 m/s^3, Autoware's mrm_emergency_stop_operator profile); one that was braking harder eases
  to -stop_deceleration at stop_jerk;
- the commanded speed integrates the braking part of that acceleration from the previous
  commanded speed, speed = max(previous speed + min(acceleration, 0) * dt, 0): it never rises
  during a stop, reaches 0 and holds 0.
After a release the output moves from where the stop left it to the policy's command within the
same limits.

Every limit hit is counted (`counters`, for /diagnostics). Time is always passed in (seconds on
one clock for every call: the node's clock); nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from av_td3_ros.config_schema import Settings, setting
from av_td3_ros.vehicle.conversion import VehicleCommand
from av_td3_ros.vehicle.parameters import VehicleParameters

__all__ = ["COUNTERS", "CommandGate", "GateLimits", "GateResult", "gear_for"]

DRIVING, STOPPING, HOLDING = "driving", "stopping", "holding"
ESTOP, HEARTBEAT_LOST, WAITING_FOR_HEARTBEAT = "estop", "heartbeat_lost", "waiting_for_heartbeat"

COUNTERS = (
    "steering_angle",  # the command's angle was beyond +-max_steering_angle
    "steering_rate",  # the angle moved faster than max_steering_rate
    "acceleration",  # beyond [-max_deceleration, max_acceleration]
    "jerk",  # the acceleration changed faster than max_jerk
    "speed",  # speed target above max_speed, or acceleration > 0 at/above it
    "non_finite_command",  # NaN/inf steering angle or acceleration (braked instead)
    "non_finite_time",  # a call with a NaN/inf time (ignored)
    "time_backwards",  # a call earlier than the previous update (output repeated)
    "step_capped",  # more than max_step since the previous update
    "estop_engaged",  # e-stop input went to True
    "heartbeat_lost",  # heartbeat silent for longer than heartbeat_timeout
    "release_refused",
    "released",
)

_DEFAULT_VEHICLE = VehicleParameters()


@dataclass(frozen=True)
class GateLimits(Settings):
    """Deploy-mode limits. Magnitudes, all > 0 (heartbeat_timeout >= 0; 0 = no heartbeat).

    Defaults: the steering angle and acceleration ranges of the default VehicleParameters (CARLA's
    Model 3); max_steering_rate 1.0 rad/s, max_jerk 5.0 m/s^3 and max_speed 25 m/s from
    Autoware's vehicle_cmd_gate nominal limits (steer_rate_lim 1.0, lon_jerk_lim 5.0 above
    0.3 m/s, vel_lim 25.0); stop_deceleration 2.5 m/s^2 and stop_jerk 1.5 m/s^3 from Autoware's
    mrm_emergency_stop_operator (target_acceleration -2.5, target_jerk -1.5)."""

    max_steering_angle: float = setting(_DEFAULT_VEHICLE.max_steering_angle,
                                        "largest road-wheel angle sent [rad]", gt=0.0, lt=1.57)
    max_steering_rate: float = setting(1.0, "largest steering rate sent [rad/s]", gt=0.0, max=100.0)
    max_acceleration: float = setting(_DEFAULT_VEHICLE.max_acceleration, "largest acceleration sent [m/s^2]",
                                      gt=0.0, max=100.0)
    max_deceleration: float = setting(_DEFAULT_VEHICLE.max_deceleration,
                                      "largest deceleration sent [m/s^2, a magnitude]", gt=0.0, max=100.0)
    max_jerk: float = setting(5.0, "largest change of the acceleration [m/s^3]", gt=0.0, max=1000.0)
    max_speed: float = setting(25.0, "largest speed target sent [m/s]", gt=0.0, max=200.0)
    stop_deceleration: float = setting(2.5, "deceleration of the stop ramp [m/s^2]", gt=0.0, max=100.0)
    stop_jerk: float = setting(1.5, "jerk with which the stop ramp builds up [m/s^3]", gt=0.0, max=1000.0)
    heartbeat_timeout: float = setting(0.0, "seconds of heartbeat silence that mean stop; 0 = no heartbeat",
                                       min=0.0, max=60.0)
    max_step: float = setting(0.5, "a longer gap between two updates counts as this long [s]", gt=0.0,
                              max=10.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if value < 0.0 or (value == 0.0 and f.name != "heartbeat_timeout"):
                raise ValueError(f"{f.name} must be > 0, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.stop_deceleration > self.max_deceleration:
            raise ValueError(
                f"stop_deceleration {self.stop_deceleration} exceeds max_deceleration {self.max_deceleration}"
            )
        if self.stop_jerk > self.max_jerk:
            raise ValueError(f"stop_jerk {self.stop_jerk} exceeds max_jerk {self.max_jerk}")
        super().__post_init__()  # the settings' ranges

    @classmethod
    def for_vehicle(cls, params: VehicleParameters, **overrides: float) -> GateLimits:
        """The vehicle's steering, acceleration and speed ranges as the outer limits; `overrides`
        (e.g. a lower max_speed) on top."""
        values = {
            "max_steering_angle": params.max_steering_angle,
            "max_acceleration": params.max_acceleration,
            "max_deceleration": params.max_deceleration,
            "max_speed": min(params.max_speed, cls().max_speed),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class GateResult:
    """One gated command and why it looks the way it does.

    state: "driving" (the policy's command, limited), "stopping" (on the stop ramp) or "holding"
    (stopped at commanded speed 0); stop_reasons: "estop", "heartbeat_lost" (both latched until
    release) and "waiting_for_heartbeat"; limited: the counters this call incremented."""

    command: VehicleCommand
    state: str
    stop_reasons: tuple[str, ...]
    limited: tuple[str, ...]


def _finite_or_none(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


class CommandGate:
    """Limits, e-stop, heartbeat and stop ramp for one vehicle (module doc). Not thread-safe:
    call it from one thread (the node's control callback group) or under one lock."""

    def __init__(self, limits: GateLimits | None = None) -> None:
        self.limits = limits or GateLimits()
        self._previous: VehicleCommand | None = None
        self._last_time: float | None = None
        self._state = DRIVING
        self._latched: set[str] = set()
        self._estop_input = False
        self._last_heartbeat: float | None = None
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._stop_id = 0  # the number of the latest stop (0: none yet)

    # --- inputs ---------------------------------------------------------------------------------
    def estop(self, engaged, now: float) -> None:
        """The e-stop input (std_msgs/Bool data). Anything truthy latches a stop; False only
        records that the e-stop is no longer pressed (needed for `release`)."""
        engaged = bool(engaged)
        if engaged and not self._estop_input:
            self._counters["estop_engaged"] += 1
            self._stop_id += 1  # a new press is a new stop, even while an earlier one is latched
        self._estop_input = engaged
        if engaged:
            self._latched.add(ESTOP)

    def heartbeat(self, now: float) -> None:
        """A heartbeat arrived at `now` (ignored if `now` is not finite)."""
        t = _finite_or_none(now)
        if t is not None:
            self._last_heartbeat = t

    def release(self, now: float) -> tuple[bool, str]:
        """Release a latched stop: (success, message), like std_srvs/Trigger's response.

        Refused while the e-stop input is True or, with a heartbeat required, while it is not
        alive at `now`. Authenticate the caller before calling this."""
        t = _finite_or_none(now)
        problem = ""
        if self._estop_input:
            problem = "the e-stop input is still engaged"
        elif self.limits.heartbeat_timeout > 0.0 and not self._heartbeat_alive(t):
            problem = "no live heartbeat"
        elif t is None:
            problem = f"release time {now!r} is not finite"
        if problem:
            self._counters["release_refused"] += 1
            return False, f"release refused: {problem}"
        if not self._latched:
            return True, "nothing to release"
        released = ", ".join(sorted(self._latched))
        self._latched.clear()
        self._counters["released"] += 1
        return True, f"released ({released})"

    # --- the gate -------------------------------------------------------------------------------
    def update(
        self, now: float, steering_angle: float, acceleration: float, current_speed: float
    ) -> GateResult:
        """Gate one command: the desired road-wheel angle [rad, + left] and acceleration
        [m/s^2] (from `vehicle.conversion`), the measured speed [m/s] (NaN if unknown)."""
        hits: list[str] = []
        t = _finite_or_none(now)
        measured = _finite_or_none(current_speed)
        if self._previous is None:
            start_speed = _clip(measured, 0.0, self.limits.max_speed) if measured is not None else 0.0
            self._previous = VehicleCommand(0.0, 0.0, 0.0, start_speed, 0.0)
        if t is None:
            self._count(hits, "non_finite_time")
            return self._result(self._previous, self._reasons_so_far(), hits)
        if self._last_heartbeat is not None and self._last_heartbeat > t:
            # A clock that jumped back must not keep an old heartbeat alive for longer than one
            # timeout: its age counts from now.
            self._last_heartbeat = t
        reasons = self._stop_reasons(t)
        dt = 0.0 if self._last_time is None else t - self._last_time
        if dt < 0.0:
            self._count(hits, "time_backwards")
        if dt <= 0.0:  # the first call, a repeated time or a clock that went back: nothing moves
            if dt < 0.0 or self._last_time is None:
                self._last_time = t
            return self._result(self._previous, reasons, hits)
        self._last_time = t
        if dt > self.limits.max_step:
            dt = self.limits.max_step
            self._count(hits, "step_capped")
        if reasons:
            command = self._stop_step(dt)
        else:
            command = self._drive_step(dt, steering_angle, acceleration, measured, hits)
        self._previous = command
        return self._result(command, reasons, hits)

    # --- state for /diagnostics -------------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    @property
    def state(self) -> str:
        return self._state

    @property
    def stop_id(self) -> int:
        """The number of the latest stop (0 before the first): what a release must name."""
        return self._stop_id

    @property
    def latched(self) -> tuple[str, ...]:
        return tuple(sorted(self._latched))

    @property
    def estop_input(self) -> bool:
        return self._estop_input

    def heartbeat_age(self, now: float) -> float | None:
        """Seconds since the last heartbeat at `now` (None before the first one)."""
        t = _finite_or_none(now)
        if self._last_heartbeat is None or t is None:
            return None
        return max(t - self._last_heartbeat, 0.0)

    # --- internals ------------------------------------------------------------------------------
    def _count(self, hits: list[str], name: str) -> None:
        self._counters[name] += 1
        hits.append(name)

    def _heartbeat_alive(self, t: float | None) -> bool:
        if self._last_heartbeat is None or t is None:
            return False
        return t - self._last_heartbeat <= self.limits.heartbeat_timeout

    def _stop_reasons(self, t: float) -> tuple[str, ...]:
        required = self.limits.heartbeat_timeout > 0.0
        if required and self._last_heartbeat is not None and not self._heartbeat_alive(t):
            if HEARTBEAT_LOST not in self._latched:
                self._latched.add(HEARTBEAT_LOST)
                self._counters["heartbeat_lost"] += 1
                self._stop_id += 1
        return self._reasons_so_far()

    def _reasons_so_far(self) -> tuple[str, ...]:
        waiting = self.limits.heartbeat_timeout > 0.0 and self._last_heartbeat is None
        return tuple(sorted(self._latched)) + ((WAITING_FOR_HEARTBEAT,) if waiting else ())

    def _result(self, command: VehicleCommand, reasons: tuple[str, ...], hits: list[str]) -> GateResult:
        if reasons:
            self._state = HOLDING if command.speed == 0.0 else STOPPING
        else:
            self._state = DRIVING
        return GateResult(command, self._state, reasons, tuple(hits))

    def _stop_step(self, dt: float) -> VehicleCommand:
        lim, prev = self.limits, self._previous
        target = -lim.stop_deceleration
        a = prev.acceleration
        if a > 0.0:
            a = max(a - lim.max_jerk * dt, 0.0)
        elif a > target:
            a = max(a - lim.stop_jerk * dt, target)
        elif a < target:
            a = min(a + lim.stop_jerk * dt, target)
        # Never a higher speed target once stopping, even while the throttle is still being cut.
        speed = _clip(prev.speed + min(a, 0.0) * dt, 0.0, lim.max_speed)
        return VehicleCommand(prev.steering_angle, 0.0, a, speed, (a - prev.acceleration) / dt)

    def _drive_step(self, dt, desired_angle, desired_accel, measured, hits) -> VehicleCommand:
        lim, prev = self.limits, self._previous
        angle, accel = _finite_or_none(desired_angle), _finite_or_none(desired_accel)
        if angle is None or accel is None:
            self._count(hits, "non_finite_command")
            angle, accel = prev.steering_angle, -lim.max_deceleration

        if abs(angle) > lim.max_steering_angle:
            self._count(hits, "steering_angle")
            angle = _clip(angle, -lim.max_steering_angle, lim.max_steering_angle)
        step = lim.max_steering_rate * dt
        if abs(angle - prev.steering_angle) > step:
            self._count(hits, "steering_rate")
            angle = _clip(angle, prev.steering_angle - step, prev.steering_angle + step)
            # The rate clip is relative to an in-range previous angle, so this only fixes rounding.
            angle = _clip(angle, -lim.max_steering_angle, lim.max_steering_angle)

        if not -lim.max_deceleration <= accel <= lim.max_acceleration:
            self._count(hits, "acceleration")
            accel = _clip(accel, -lim.max_deceleration, lim.max_acceleration)
        base_speed = measured if measured is not None else prev.speed
        if base_speed >= lim.max_speed and accel > 0.0:
            self._count(hits, "speed")
            accel = 0.0
        step = lim.max_jerk * dt
        if abs(accel - prev.acceleration) > step:
            self._count(hits, "jerk")
            accel = _clip(accel, prev.acceleration - step, prev.acceleration + step)
            accel = _clip(accel, -lim.max_deceleration, lim.max_acceleration)

        speed = base_speed + accel * dt
        if speed > lim.max_speed:
            if "speed" not in hits:
                self._count(hits, "speed")
        speed = _clip(speed, 0.0, lim.max_speed)
        return VehicleCommand(
            steering_angle=angle,
            steering_rate=(angle - prev.steering_angle) / dt,
            acceleration=accel,
            speed=speed,
            jerk=(accel - prev.acceleration) / dt,
        )


def gear_for(state: str, measured_speed: float, standstill_speed: float = 0.1) -> str:
    """The gear to command next to a gated command: "park" only while the gate holds (a stop is
    active and the commanded speed is 0) AND the measured speed is below `standstill_speed`
    [m/s]; "drive" otherwise. An unknown (non-finite) speed never parks."""
    speed = _finite_or_none(measured_speed)
    if state == HOLDING and speed is not None and abs(speed) < standstill_speed:
        return "park"
    return "drive"

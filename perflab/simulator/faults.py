"""Fault injection for the simulator: which fault (if any) one aggregates request gets, drawn from a seeded RNG.

``SimulatorConfig.faults`` (and the body of ``POST /_faults``) is a dict; every key is optional and off
by default. Rates are fractions of aggregates requests; delays are real (wall) seconds, not scaled:

    server_error_rate      answered 500/502/503
    gateway_timeout_rate   answered 504 after ``gateway_timeout_s``
    reset_rate             connection closed with no response
    slow_body_rate         headers, then the body trickled over ``slow_body_s``
    malformed_rate         200 with truncated JSON
    null_results_rate      200 with ``"results": null`` (the counts still say how many bars there were)
    duplicate_rate         a page repeats some of its bars
    burst_429_rate         429 regardless of the rate-limit bucket
    outage                 {"after_s", "duration_s"}: every aggregates request answers 503 in that window,
                           in seconds since the server started
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from perflab.errors import InputError

# Faults decided before the bars are built (the answer is an error), then those that spoil a 200 body.
ERROR_FAULTS = ("burst_429", "server_error", "gateway_timeout", "reset")
BODY_FAULTS = ("slow_body", "malformed", "null_results", "duplicate")
RATE_KEYS = tuple(f"{k}_rate" for k in ERROR_FAULTS + BODY_FAULTS)
DELAY_KEYS = ("gateway_timeout_s", "slow_body_s")
FAULT_KEYS = RATE_KEYS + DELAY_KEYS + ("outage",)
DEFAULT_DELAYS = {"gateway_timeout_s": 1.0, "slow_body_s": 1.0}


def validate_faults(faults: object) -> dict:
    """Check a faults dict (unknown keys, rates outside [0, 1], negative delays); return a clean copy."""
    if not isinstance(faults, dict):
        raise InputError(f"faults must be a JSON object, got {type(faults).__name__}")
    unknown = set(faults) - set(FAULT_KEYS)
    if unknown:
        raise InputError(f"unknown fault keys {sorted(unknown)}: use any of {', '.join(FAULT_KEYS)}")
    for key in RATE_KEYS:
        value = faults.get(key, 0)
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InputError(f"fault {key} must be a fraction between 0 and 1, got {value!r}")
    for key in DELAY_KEYS:
        value = faults.get(key, 0)
        if not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"fault {key} must be seconds >= 0, got {value!r}")
    outage = faults.get("outage")
    if outage is not None and (not isinstance(outage, dict) or set(outage) != {"after_s", "duration_s"}):
        raise InputError("fault outage must be {\"after_s\": seconds, \"duration_s\": seconds}")
    return dict(faults)


@dataclass(frozen=True)
class FaultPlan:
    """The faults in force: draws one error fault and one body fault per request, and knows the outage window."""

    faults: dict

    def delay(self, key: str) -> float:
        return float(self.faults.get(key, DEFAULT_DELAYS[key]))

    def in_outage(self, uptime_s: float) -> bool:
        outage = self.faults.get("outage")
        if not outage:
            return False
        start = float(outage["after_s"])
        return start <= uptime_s < start + float(outage["duration_s"])

    def draw(self, rng: random.Random, kinds: tuple[str, ...]) -> str | None:
        """The first of ``kinds`` whose rate fires (one uniform draw per kind, in a fixed order), or None."""
        hit = None
        for kind in kinds:
            rate = float(self.faults.get(f"{kind}_rate", 0))
            if rng.random() < rate and hit is None:
                hit = kind
        return hit

"""What the Prometheus and OpenTelemetry exporters share: buckets and outcome names."""

from __future__ import annotations

from lbclient._outcome import Outcome

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds, for RPCs: from a 1 ms loopback call to a 10 s timeout."""


def outcome_label(outcome: Outcome) -> str:
    """``success``, ``cancelled`` or the failure kind (``connect``, ``gateway``, ...)."""
    if outcome.cancelled:
        return "cancelled"
    return "success" if outcome.failure is None else outcome.failure.value

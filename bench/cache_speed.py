"""Suite ``cache``: L1 memory cache speed against the peers (being written)."""

from __future__ import annotations

from bench._harness import Config, Harness, LoopChoice, Plan, Result, Suite

__all__ = ["SUITE"]


def plan(config: Config, loop: LoopChoice) -> Plan:
    return Plan(cases=[], notes=["not written yet"])


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    return None


SUITE = Suite(
    name="cache", description="L1 memory cache speed against the peers", plan=plan, report=report
)

"""Suite ``disk``: L2 disk cache speed against diskcache (being written)."""

from __future__ import annotations

from bench._harness import Config, Harness, LoopChoice, Plan, Result, Suite

__all__ = ["SUITE"]


def plan(config: Config, loop: LoopChoice) -> Plan:
    return Plan(cases=[], notes=["not written yet"])


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    return None


SUITE = Suite(
    name="disk", description="L2 disk cache speed against diskcache", plan=plan, report=report
)

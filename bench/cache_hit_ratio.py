"""Suite ``hit_ratio``: eviction policies' hit ratios on Zipf workloads and real traces."""

from __future__ import annotations

from bench._harness import Config, Harness, LoopChoice, Plan, Result, Suite

__all__ = ["SUITE"]


def plan(config: Config, loop: LoopChoice) -> Plan:
    return Plan(cases=[], notes=["not written yet"])


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    return None


SUITE = Suite(
    name="hit_ratio",
    description="eviction policies' hit ratios on Zipf workloads and real traces",
    plan=plan,
    report=report,
)

"""The benchmark harness and its suites (``asyncperf bench``, ``python -m bench``).

Each suite module exposes ``SUITE``; :data:`SUITES` in ``_main`` lists them.
The harness (:mod:`asyncperf.tools.bench._harness`) runs every case in a fresh
event loop after a warm-up, interleaves the repetitions, and reports medians,
min-max ranges and ratios against baselines measured in the same run.
"""

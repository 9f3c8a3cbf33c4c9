"""The asyncperf benchmark suites: ``python -m bench --help`` (see bench/README.md)."""

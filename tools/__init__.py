"""Benchmarks, studies and the fault-injection run: ``python -m tools.<name>`` from the repository root
(runs without installing the package; ``python tools/<name>.py`` works once it is installed)."""

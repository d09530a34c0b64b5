"""Benchmarks of pgjobs beside its peers and the raw-SQL floor.

Layout: ``systems/`` has one module per queue, each implementing
:class:`bench.systems.base.System` for the harness side (install, enqueue,
worker command lines, what is left to run); ``apps/`` has what those worker
processes import (no-op and ping handlers); ``floor.py`` drives pgbench;
``measure.py`` holds the measurements every system shares; ``report.py`` writes
the Markdown table and the chart; ``runner.py`` composes them.
"""

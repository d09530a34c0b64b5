"""``python -m bench [--quick] [--systems a,b] [--runs N]``: run the benchmarks
and write bench/results/<date>.md, its chart and the raw JSON."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from bench import report, runner, settings
from bench.systems import ALL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and a 1-minute sustained run")
    parser.add_argument("--tiny", action="store_true", help="the smoke test's sizes")
    parser.add_argument("--systems", default=",".join(ALL),
                        help=f"comma-separated, of: {', '.join(ALL)}")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--no-floor", action="store_true", help="skip the pgbench floor")
    parser.add_argument("--no-sustained", action="store_true", help="skip the sustained run")
    parser.add_argument("--no-hosts", action="store_true",
                        help="skip the workers-on-several-hosts figure (bench/hosts.py)")
    parser.add_argument("--no-backlog", action="store_true",
                        help="skip the sustained runs at 90%% of peak, empty vs beside "
                             "10M finished jobs (--quick: 1M)")
    parser.add_argument("--sustained-seconds", type=float, default=None,
                        help="length of the sustained run (full: 600, --quick: 60)")
    parser.add_argument("--pressure-rate", type=float, default=None,
                        help="jobs/s offered in the pressure phases at a fixed rate "
                             "(default 800, issue 19's; 0 skips them)")
    parser.add_argument("--out", default=None, help="results directory (default bench/results)")
    parser.add_argument("--no-async", action="store_true",
                        help="skip the async figures (bench/aio.py)")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}")
    sizes = settings.TINY if args.tiny else settings.QUICK if args.quick else settings.FULL
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.sustained_seconds is not None:
        sizes = dataclasses.replace(
            sizes,
            sustained_seconds=args.sustained_seconds,
            sustained_window=max(sizes.sustained_window, args.sustained_seconds / 20),
        )
        mode += f", sustained {args.sustained_seconds:g}s"

    if args.pressure_rate is not None:
        sizes = dataclasses.replace(sizes, pressure_rate=args.pressure_rate)
        mode += f", pressure at {args.pressure_rate:g}/s"

    result = runner.run(
        sizes, names, runs=args.runs, with_floor=not args.no_floor,
        with_sustained=not args.no_sustained, with_backlog=not args.no_backlog,
        with_hosts=not args.no_hosts,
        progress=lambda s: print(s, flush=True),
    )
    result["meta"]["mode"] = mode
    paths = report.write(result, args.out)
    for path in paths:
        print(f"wrote {path}")
    if "pgjobs" in names and not args.no_async:
        from bench import aio

        aio.main([*(["--quick"] if mode.startswith("quick") else []),
                  "--runs", str(args.runs or sizes.runs), "--systems", ",".join(names)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

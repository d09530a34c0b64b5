"""Placeholder entry point so `make bench` runs until the real suite lands."""

import sys


def main() -> int:
    print("benchmarks: see issue 6")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark in one go and print their tables as one markdown report.

    python bench/run_all.py [--quick] [--out results.md]

Each bench runs in its own process (a fresh interpreter, so one bench's
imports and threads cannot skew another's timings), one after the other.
The Redis benches flush their own database (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = (
    "bench_overshoot.py",
    "bench_overhead.py",
    "bench_redis.py",
    "bench_pricing.py",
    "bench_holds.py",
    "bench_estimate.py",
    "bench_limits.py",
    "bench_observe.py",
    "bench_live_prices.py",
    "bench_trial.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each bench's --quick")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    sections: list[str] = []
    failed: list[str] = []
    for name in BENCHES:
        command = [sys.executable, str(HERE / name), *(["--quick"] if args.quick else [])]
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        took = time.monotonic() - started
        print(f"-- {name}: exit {done.returncode} after {took:.0f} s", file=sys.stderr, flush=True)
        sections.append(done.stdout.strip())
        if done.returncode != 0:
            failed.append(name)
    report = "\n\n".join(sections) + "\n"
    print(report)
    if args.out is not None:
        args.out.write_text(report)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

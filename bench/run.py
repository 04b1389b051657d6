"""Run every benchmark, one after the other, each printing its own table.

    .venv/bin/python bench/run.py            # or: make bench

Ingest, read and forecast benchmarks use PostgreSQL (DATABASE_URL, or a bench database on
127.0.0.1:5432 they create); the anomaly and conformal-stretch benchmarks need no
database. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ["ingest.py", "--rows", "1000000", "4000000"],
    ["reads.py"],
    ["forecast.py"],
    ["anomalies.py"],
    ["conformal_stretch.py"],
]


def main() -> int:
    failed = []
    for script, *args in BENCHES:
        print(f"\n=== bench/{script} {' '.join(args)}", flush=True)
        if subprocess.call([sys.executable, str(HERE / script), *args]) != 0:  # noqa: S603
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

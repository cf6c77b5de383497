"""Merge claim reports of several runs (machines, models, profiles) into one.

    python scripts/merge_reports.py a/claims.json b/claims.json [...] --out reports/

Each input is a report directory's ``claims.json`` (its figure data, ``.figure-data.json``
beside it, comes along). A test present in several inputs keeps its most recent run
(``run_at``; a tie goes to the input named later). The result is merged into ``--out``
like a run's records (``ropedim.report.write``): the out report's other tests are kept,
its figures and ``claims.md`` are redrawn from everything. Runs that share one
``--report-dir`` on a shared file system need no merge: the report is locked while a
run writes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # claims/ (the claims table) lives beside ropedim/

from claims.table import CLAIMS  # noqa: E402
from ropedim import report  # noqa: E402
from ropedim.cache import lock_for  # noqa: E402


def merge(inputs: list[Path], out: Path) -> list[Path]:
    """Merge the records of ``inputs`` (claims.json paths) into the report in ``out``."""
    latest = {}
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such claims.json (give the files a run wrote to its --report-dir)")
        records = report.load(path)
        if not records:
            raise ValueError(f"{path}: no records could be read (an empty, damaged or foreign file)")
        for r in records:
            if r.test_id not in latest or r.run_at >= latest[r.test_id].run_at:
                latest[r.test_id] = r
    with lock_for(Path(out) / "claims.json"):
        return report.write(list(latest.values()), out, CLAIMS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", type=Path, help="claims.json files of the runs to merge")
    ap.add_argument("--out", type=Path, required=True, help="report directory to merge into (e.g. reports/)")
    args = ap.parse_args(argv)
    paths = merge(args.inputs, args.out)
    print(f"merged {len(args.inputs)} reports into {args.out}:")
    for p in paths[:2]:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare two claim reports record by record: verdict, value and interval.

    python scripts/diff_reports.py before/claims.json after/claims.json [--tol 0]

Prints every test whose verdict, value or interval differs (beyond ``--tol``, absolute),
and the tests only one side has; exits 1 if any differ. Reads both the current record
format and the older one (the same keys: test_id, verdict, value, interval).
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def load(path: str) -> dict[str, dict]:
    rows = json.load(open(path))
    rows = rows if isinstance(rows, list) else rows.get("records", [])
    return {r["test_id"]: r for r in rows}


def _close(a, b, tol: float) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--tol", type=float, default=0.0, help="absolute tolerance on values (default: 0, exact)")
    args = ap.parse_args(argv)
    a, b = load(args.before), load(args.after)
    differ = 0
    for tid in sorted(set(a) | set(b)):
        if tid not in a or tid not in b:
            print(f"{tid}: only in {'after' if tid in b else 'before'}")
            differ += 1
            continue
        x, y = a[tid], b[tid]
        diffs = [f"{k}: {x.get(k)} -> {y.get(k)}" for k in ("verdict", "value", "interval")
                 if not (x.get(k) == y.get(k) if k == "verdict" else _close(x.get(k), y.get(k), args.tol))]
        if diffs:
            print(f"{tid}: " + "; ".join(diffs))
            differ += 1
    print(f"{len(set(a) & set(b))} tests on both sides, {differ} differ" + (f" (tol {args.tol:g})" if args.tol else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

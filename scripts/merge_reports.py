"""Merge claim reports of several runs (machines, models, profiles) into one; the same as
``python -m ropedim.report merge``:

    python scripts/merge_reports.py a/claims.json b/claims.json [...] --out reports/

Each input is a report directory's ``claims.json`` (its figure data, ``.figure-data.json``
beside it, comes along). A test present in several inputs keeps its most recent run
(``run_at``; a tie goes to the input named later). The result is merged into ``--out``
like a run's records (``ropedim.report.write``): the out report's other tests are kept,
its figures, ``claims.md`` and ``claims.html`` are redrawn from everything. Runs that
share one ``--report-dir`` on a shared file system need no merge: the report is locked
while a run writes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ropedim/ and claims/ of this checkout

from ropedim import report  # noqa: E402

if __name__ == "__main__":
    sys.exit(report.main(["merge", *sys.argv[1:]]))

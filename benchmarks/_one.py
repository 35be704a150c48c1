"""Run one benchmark in this process and write its rows as JSON: the parent's worker.

``python -m benchmarks._one NAME OUT [--quick]``
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

from benchmarks import BENCHMARKS
from benchmarks._common import Row, failed_row


def main(argv: list[str]) -> int:
    name, out = argv[0], argv[1]
    quick = "--quick" in argv[2:]
    bench = BENCHMARKS[name]
    try:
        # "package.module" runs its run(); "package.module:function" names another entry.
        module, _, function = bench.module.partition(":")
        rows: list[Row] = getattr(importlib.import_module(module), function or "run")(quick)
        code = 0
    except Exception as exc:
        traceback.print_exc()
        rows = [failed_row(bench.title, bench.target, f"{type(exc).__name__}: {exc}")]
        code = 1
    with open(out, "w") as f:
        json.dump([row.to_json() for row in rows], f)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

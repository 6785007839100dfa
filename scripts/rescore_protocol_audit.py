"""Re-score the audit column of protocol JSONs with today's audit rule (no model is run).

Usage:
    .venv/bin/python scripts/rescore_protocol_audit.py docs/benchmarks-protocol-salun.json ...

Every pair's verdict and every row's counts are recomputed by
``benchmark_protocol.rescore_audit`` from the scores the document records (the audit's inputs:
the retrains', the originals' and each candidate's forget Dice), and the document is rewritten
atomically with an ``audit_rescored`` entry (date, and how many verdicts changed). A document
that does not record every input (a slice over some subjects) is named on stderr and left as it
is; the exit code is then 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="benchmarks-protocol*.json files")
    args = parser.parse_args(argv)

    import benchmark_protocol as protocol  # scripts/ is on sys.path when this runs as a script

    from MachineUnlearningLib.runtime.files import write_json

    failed = 0
    for path in args.json:
        document = json.loads(path.read_text(encoding="utf-8"))
        try:
            rescored = protocol.rescore_audit(document)
        except ValueError as error:
            print(f"{path}: left as it is: {error}", file=sys.stderr)
            failed += 1
            continue
        changed = sum(
            old["audit"] != new["audit"]
            for name, pairs in document["pairs"].items()
            for old, new in zip(pairs, rescored["pairs"][name], strict=True)
        )
        if changed:
            rescored["audit_rescored"] = {"date": date.today().isoformat(), "changed": changed}
            write_json(path, rescored)
        print(f"{path}: {changed} verdict(s) changed", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Merge pytest-benchmark JSON files into one, without each round's raw times, for benchmarks/results/.

    python benchmarks/merge_results.py OUT.json IN.json [IN.json ...]

The benchmarks keep their order (files in the order given); machine and commit information come
from the last file. ``stats.data`` (every round's time, thousands of numbers) is dropped: the
report uses the summary statistics only. A file that is empty or cut off (a run stopped while
writing it) is named and skipped, not fatal: the others are still worth keeping.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def merge(paths: list[Path]) -> dict:
    """The benchmarks of every readable file in ``paths``, raw rounds dropped."""
    runs = []
    for p in paths:
        try:
            runs.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            print(f"merge_results: skipped {p}: {e}", file=sys.stderr)
    if not runs:
        raise SystemExit("merge_results: no readable benchmark file")
    merged = dict(runs[-1])
    merged["benchmarks"] = []
    for run in runs:
        for b in run.get("benchmarks", []):
            b = dict(b, stats={k: v for k, v in b["stats"].items() if k != "data"})
            merged["benchmarks"].append(b)
    return merged


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out, *ins = map(Path, argv)
    if out in ins:
        raise SystemExit(f"merge_results: {out} is also an input; write the merge elsewhere")
    merged = merge(ins)
    out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"{out}: {len(merged['benchmarks'])} benchmarks from {len(ins)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

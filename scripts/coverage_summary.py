"""Summarise coverage.py's JSON report of pipeline/ (written by scripts/coverage.sh) as Markdown:
line and branch coverage in all, and every file under the threshold with its missing lines."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pct(covered: int, total: int) -> float:
    return 100.0 * covered / total if total else 100.0


def ranges(lines: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out: list[str] = []
    for n in sorted(lines):
        if out and n == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def summary(report: dict[str, Any], threshold: float = 90.0, what: str = "the test suite") -> str:
    t = report["totals"]
    rows = []
    for name, f in sorted(report["files"].items()):
        s = f["summary"]
        line_pct = _pct(s["covered_lines"], s["num_statements"])
        if line_pct < threshold:
            rows.append(f"| {name} | {s['covered_lines']}/{s['num_statements']} | {line_pct:.1f} % | "
                        f"{s['covered_branches']}/{s['num_branches']} | "
                        f"{_pct(s['covered_branches'], s['num_branches']):.1f} % | "
                        f"{ranges(f['missing_lines'])} |")
    head = [
        f"# Coverage of pipeline/ by {what}",
        "",
        f"coverage.py {report['meta']['version']}, {report['meta']['timestamp'][:19]}; "
        "lines excluded only where marked `# pragma: no cover - CUDA only: <why>` "
        f"({t['excluded_lines']} lines).",
        "",
        f"- lines: {t['covered_lines']}/{t['num_statements']} = "
        f"{_pct(t['covered_lines'], t['num_statements']):.1f} %",
        f"- branches: {t['covered_branches']}/{t['num_branches']} = "
        f"{_pct(t['covered_branches'], t['num_branches']):.1f} %",
        f"- files: {len(report['files'])}, {len(rows)} under {threshold:g} % of lines",
        "",
    ]
    if rows:
        head += [f"## Files under {threshold:g} % of lines", "",
                 "| file | lines | lines % | branches | branches % | missing lines |", "|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(head)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("report", type=Path, help="coverage.json (coverage json)")
    ap.add_argument("--threshold", type=float, default=90.0)
    ap.add_argument("--rehearsal", type=int, default=0, help="1: the rehearsal ran too")
    args = ap.parse_args(argv)
    what = "the test suite and the paper rehearsal" if args.rehearsal else "the test suite"
    print(summary(json.loads(args.report.read_text()), args.threshold, what), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

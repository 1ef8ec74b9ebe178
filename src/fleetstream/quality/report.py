"""A data-quality run as an HTML page: one row per expectation, failures first.

>>> import datetime as dt
>>> from fleetstream.quality.check import Result, Run
>>> at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
>>> run = Run("r1", [Result("r1", at, "gold/car_state", "unique(car_id)", "critical", False, "2 rows <repeat>", 9)])
>>> page = html_report(run)
>>> "1 of 1 expectations failed" in page, "&lt;repeat&gt;" in page
(True, True)
"""

from __future__ import annotations

import html

from fleetstream.quality.check import Run

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
tr.fail.critical td { background: #fde2e1; }
tr.fail.warning td { background: #fff4d6; }
tr.pass td { background: #eaf7ea; }
.badge { font-weight: 600; } .summary.ok { color: #1b7f3b; } .summary.bad { color: #b3261e; }
"""


def html_report(run: Run) -> str:
    """The page of one run."""
    results = sorted(run.results, key=lambda r: (r.passed, r.severity != "critical", r.table, r.expectation))
    failed = len(run.failed)
    at = results[0].run_at.strftime("%Y-%m-%d %H:%M:%S UTC") if results else "-"
    summary = (
        f"all {len(results)} expectations hold"
        if not failed
        else f"{failed} of {len(results)} expectations failed ({len(run.critical_failed)} critical)"
    )
    rows = []
    for r in results:
        state = "pass" if r.passed else f"fail {r.severity}"
        badge = "pass" if r.passed else "FAIL"
        cells = (r.table, r.expectation, r.severity, badge, f"{r.rows:,}", r.observed)
        rows.append(f'<tr class="{state}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("table", "expectation", "severity", "result", "rows checked", "observed"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fleetstream data quality</title>"
        f"<style>{_STYLE}</style></head><body><h1>Data quality</h1>"
        f"<p>run <code>{html.escape(run.run_id)}</code> at {at}: "
        f"<span class='summary {'ok' if not failed else 'bad'}'>{summary}</span></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n"
    )

"""How heavy the demo's HTML report is, and how fast Chromium paints and loads it.

    python benchmarks/report_weight.py --demo wherefrom-demo [--before OLD.html] [--loads 5] [--out benchmarks/results]

Writes the report of ``DEMO/scores-ekfac`` as `wherefrom demo` does (ranked by influence, ``--bootstraps`` tail
fits), breaks its bytes down (plots, token heatmaps, unit data), then opens it in headless Chromium (Debian's, as the
browser tests do) ``--loads`` times in fresh tabs and records each load's first contentful paint and load event
(the page's own ``performance`` timings). With ``--before`` (a report written by an earlier wherefrom), both files
are loaded alternately (A, B, A, B, ...) in the same browser, so their times are comparable within the run.
Writes report-weight.json to ``--out``. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from wherefrom.outputs.report import write_report
from wherefrom.scoring.results import ScoreResult

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TIMINGS = """() => {
  const navigation = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  return {first_paint: paint ? paint.startTime / 1000 : null, load: navigation.loadEventEnd / 1000,
          elements: document.getElementsByTagName("*").length};
}"""
PARTS = {  # what the bytes are: a name and the pattern of its pieces
    "plots (SVG data URIs)": r'src="data:image/svg\+xml[^"]*"',
    "token spans": r"<span[^>]*title=\"[^\"]*\">[^<]*</span>",
    "unit data (JSON)": r'<script type="application/json"[^>]*>.*?</script>',
}


def breakdown(html: str) -> dict[str, int]:
    """Bytes of the whole file and of each of its heavy parts."""
    sizes = {"total": len(html.encode("utf-8"))}
    for name, pattern in PARTS.items():
        sizes[name] = sum(len(m.encode("utf-8")) for m in re.findall(pattern, html, flags=re.S))
    return sizes


def browser_timings(paths: dict[str, Path], loads: int) -> dict[str, list[dict[str, float]]]:
    """Each file loaded ``loads`` times, alternating between the files, in one headless Chromium."""
    from playwright.sync_api import sync_playwright

    timings: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=ARGS, viewport={"width": 1400, "height": 900})
        for _ in range(loads):
            for name, path in paths.items():
                page = context.new_page()
                page.goto(path.resolve().as_uri(), wait_until="load")
                timings[name].append(page.evaluate(TIMINGS))
                page.close()
        context.close()
    return timings


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {f"median_{key}": statistics.median(r[key] for r in runs) for key in ("first_paint", "load", "elements")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("wherefrom-demo"), help="a folder written by wherefrom demo")
    parser.add_argument("--before", type=Path, help="a report written by an earlier wherefrom, to compare with")
    parser.add_argument("--bootstraps", type=int, default=100, help="as `wherefrom demo --bootstraps`")
    parser.add_argument("--loads", type=int, default=5, help="page loads per file")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    result = ScoreResult.load(args.demo / "scores-ekfac")
    with tempfile.TemporaryDirectory() as folder:
        clock = time.perf_counter()
        path = write_report(replace(result, cosine=None), Path(folder) / "report.html",
                            title="wherefrom demo: where do the facts come from?", n_bootstrap=args.bootstraps)
        seconds = time.perf_counter() - clock
        files = {"after": path} if args.before is None else {"before": args.before, "after": path}
        texts = {name: p.read_text(encoding="utf-8") for name, p in files.items()}
        timings = browser_timings(files, args.loads)
    record = {
        "demo": str(args.demo), "n_queries": len(result.queries), "n_sequences": len(result.sequences),
        "bootstraps": args.bootstraps, "write_seconds": round(seconds, 2), "load_average": os.getloadavg(),
        "files": {name: {"bytes": breakdown(texts[name]), **summary(timings[name]), "loads": timings[name]}
                  for name in files},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report-weight.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for name, values in record["files"].items():
        print(f"{name}: {values['bytes']['total'] / 1e6:.2f} MB, first paint {values['median_first_paint']:.2f} s, "
              f"load {values['median_load']:.2f} s, {values['median_elements']:.0f} elements")


if __name__ == "__main__":
    main()

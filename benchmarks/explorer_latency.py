"""How soon `wherefrom serve` shows its page on the demo, and how long each question takes.

    python benchmarks/explorer_latency.py --demo wherefrom-demo [--before OLD_SRC] [--starts 3] [--questions 12] \
        [--out benchmarks/results]

Each start runs `wherefrom serve --demo DEMO` in a fresh process (``--threads 2``) and records the seconds until the
page (``/``) is served and until ``/api/info`` answers (the model, curvature, corpus and index are loaded), and the
server's CPU seconds (user + system, from /proc) by then. Then it
asks questions through ``POST /api/answer``: the demo's first query of each kind with its completion, then the
same prompt without one (the model writes it), and records each answer's wall time and the server's
own split (completion, ranking, re-scoring, figures), and the CPU seconds the server spent on it: on a busy machine
the wall time measures the machine's other work too, while the CPU time does not (on two idle cores an answer's wall
time lies between half its CPU time and its CPU time). With ``--before`` (the ``src`` folder of an earlier
wherefrom, e.g. from ``git archive``), starts alternate between the two, so their times compare within the run.
Writes explorer-latency.json to ``--out``. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
QUESTIONS_PER_KIND = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, since: float, deadline: float = 300.0) -> float:
    """Seconds from ``since`` until ``url`` answers 200."""
    while time.perf_counter() - since < deadline:
        try:
            with urllib.request.urlopen(url, timeout=60) as reply:
                if reply.status == 200:
                    return time.perf_counter() - since
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ask(base: str, pid: int, question: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"{base}/api/answer", data=json.dumps(question).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    clock, cpu = time.perf_counter(), cpu_seconds(pid)
    with urllib.request.urlopen(request, timeout=600) as reply:
        answer = json.loads(reply.read())
    return {"prompt": question["prompt"], "given_completion": question.get("completion") is not None,
            "wall": time.perf_counter() - clock, "cpu": cpu_seconds(pid) - cpu, "stages": answer["seconds"]}


def questions(demo: Path) -> list[dict[str, object]]:
    """The demo's first query of each kind with its completion, each followed by its prompt alone."""
    model_dir = Path(json.loads((demo / "summary.json").read_text())["model_dir"])
    rows = [json.loads(line) for line in (model_dir / "queries.jsonl").read_text().splitlines() if line.strip()]
    chosen, seen = [], {}
    for row in rows:
        if seen.get(row["kind"], 0) < QUESTIONS_PER_KIND:
            seen[row["kind"]] = seen.get(row["kind"], 0) + 1
            chosen.append(row)
    return [question for r in chosen for question in ({"prompt": r["prompt"], "completion": r["completion"]},
                                                      {"prompt": r["prompt"]})]


def one_start(src: Path, demo: Path, asked: list[dict[str, object]]) -> dict[str, object]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "PYTHONPATH": str(src), "WHEREFROM_THREADS": "2"}
    clock = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "wherefrom", "serve", "--demo", str(demo), "--port", str(port),
                               "--threads", "2"], env=environment, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        page = wait_for(f"{base}/", clock)
        page_cpu = cpu_seconds(server.pid)
        ready = wait_for(f"{base}/api/info", clock)
        ready_cpu = cpu_seconds(server.pid)
        answers = [ask(base, server.pid, question) for question in asked]
    finally:
        server.terminate()
        server.wait(30)
    return {"page_seconds": page, "page_cpu": page_cpu, "ready_seconds": ready, "ready_cpu": ready_cpu,
            "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("wherefrom-demo"), help="a folder written by wherefrom demo")
    parser.add_argument("--before", type=Path, help="the src folder of an earlier wherefrom, to compare with")
    parser.add_argument("--starts", type=int, default=3, help="server starts per version")
    parser.add_argument("--questions", type=int, default=12, help="questions asked per start (at most 12)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    asked = questions(args.demo)[:args.questions]
    versions = {"after": SRC} if args.before is None else {"before": args.before.resolve(), "after": SRC}
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in versions}
    for _ in range(args.starts):
        for name, src in versions.items():
            runs[name].append(one_start(src, args.demo.resolve(), asked))
            print(name, json.dumps({k: v for k, v in runs[name][-1].items() if k != "answers"}), "answers (wall, cpu):",
                  [(round(a["wall"], 2), round(a["cpu"], 2)) for a in runs[name][-1]["answers"]], flush=True)
    record = {"demo": str(args.demo), "starts": args.starts, "questions": len(asked), "load_average": os.getloadavg(),
              "versions": {}}
    for name, starts in runs.items():
        walls = [a["wall"] for s in starts for a in s["answers"]]
        cpus = [a["cpu"] for s in starts for a in s["answers"]]
        record["versions"][name] = {
            "median_page_seconds": statistics.median(s["page_seconds"] for s in starts),
            "median_page_cpu": statistics.median(s["page_cpu"] for s in starts),
            "median_ready_seconds": statistics.median(s["ready_seconds"] for s in starts),
            "median_ready_cpu": statistics.median(s["ready_cpu"] for s in starts),
            "median_answer_seconds": statistics.median(walls), "max_answer_seconds": max(walls),
            "median_answer_cpu": statistics.median(cpus), "max_answer_cpu": max(cpus),
            "starts": starts,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explorer-latency.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

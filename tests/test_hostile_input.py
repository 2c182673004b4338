"""Hostile input through the command line: every case ends with exit code 2, at most two lines that name the
problem, no traceback, and every file that existed before byte-identical afterwards (hashed)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.cli.main import app

runner = CliRunner()
QUERIES = [{"id": "capital", "prompt": "paris is the capital of", "completion": " france."}]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders), by path."""
    found = {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(args: list[object], needles: tuple[str, ...], kept: tuple[Path, ...]) -> str:
    """Run ``args``; assert a clean refusal naming every needle, with the files under ``kept`` untouched."""
    before = hashes(*kept)
    result = invoke(*args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert 1 <= len(lines) <= 2, result.output
    for needle in needles:
        assert needle.lower() in result.output.lower(), (needle, result.output)
    assert hashes(*kept) == before
    return result.output


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A model, a corpus, queries, and a finished run, score folder and index built from them."""
    root = tmp_path_factory.mktemp("hostile")
    write_workspace(root, queries=QUERIES)
    common = ["--batch-size", 4, "--max-length", 32, "-q"]
    for args in (["fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run", *common],
                 ["score", "--run", root / "run", "--queries", root / "queries.jsonl", "--out", root / "scores", "-q"],
                 ["index", "--run", root / "run", "--out", root / "index", "--budget", 512, "-q"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    return root


def fit_args(ws: Path, out: Path, *extra: object) -> list[object]:
    return ["fit", "--model", ws / "model", "--corpus", ws / "corpus.jsonl", "--out", out, "--batch-size", 4,
            "--max-length", 32, "-q", *extra]


def score_args(ws: Path, out: Path, *extra: object, run: Path | None = None) -> list[object]:
    return ["score", "--run", run or ws / "run", "--queries", ws / "queries.jsonl", "--out", out, "-q", *extra]


def damaged_copy(ws: Path, name: str, tmp_path: Path) -> Path:
    """A copy of the workspace's folder ``name`` (run, scores or index) to damage."""
    return Path(shutil.copytree(ws / name, tmp_path / name))


# Saved work: an --out of the wrong kind, an input, a file, a locked or foreign folder.

@pytest.mark.parametrize(("command", "out", "needles"), [
    ("score", "run", ("is a fitted run", "not a score folder")),
    ("score", "index", ("is a gradient index",)),
    ("fit", "scores", ("is a score folder", "not a fitted run")),
    ("fit", "index", ("is a gradient index",)),
    ("index", "run", ("is a fitted run", "not a gradient index")),
    ("index", "scores", ("is a score folder",)),
    ("score", "queries.jsonl", ("is a file",)),
    ("fit", "corpus.jsonl", ("is a file",)),
    ("fit", "model", ("is the input",)),
])
def test_an_out_of_another_kind_or_an_input_is_refused(ws, command, out, needles):
    args = {"fit": fit_args(ws, ws / out), "score": score_args(ws, ws / out),
            "index": ["index", "--run", ws / "run", "--out", ws / out, "-q"]}[command]
    output = refused(args, needles, (ws,))
    assert "create one with `wherefrom fit" not in output


def test_an_out_that_would_overwrite_an_input_is_refused(ws, tmp_path):
    queries = write_jsonl(tmp_path / "queries.jsonl", QUERIES)  # named like a score folder's own queries.jsonl
    refused(["score", "--run", ws / "run", "--queries", queries, "--out", tmp_path, "-q"],
            ("would overwrite the input",), (ws, tmp_path))


@pytest.mark.parametrize("name", ["manifest.json", "results.jsonl", "factors.safetensors"])
def test_files_another_tool_wrote_are_never_overwritten(ws, tmp_path, name):
    (tmp_path / name).write_text('{"written by": "another tool"}\n')
    command = score_args(ws, tmp_path) if name == "results.jsonl" else fit_args(ws, tmp_path)
    refused(command, ("did not write", name), (ws, tmp_path))


def test_a_finished_score_folder_of_another_scoring_needs_restart(ws, tmp_path):
    out = Path(shutil.copytree(ws / "scores", tmp_path / "scores"))
    refused(score_args(ws, out, "--top-k", 3, "--per-layer"), ("another scoring", "--restart"), (ws, out))
    assert invoke(*score_args(ws, out, "--per-layer", "--restart")).exit_code == 0
    assert "per_layer" in load_file(str(out / "scores.safetensors"))


def test_a_folder_locked_by_another_process_is_refused_naming_it(ws, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".wherefrom.lock", "w") as held:  # another process's lock, taken without wherefrom's code
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(json.dumps({"kind": "run", "pid": 424242}))
        held.flush()
        refused(fit_args(ws, out), ("another wherefrom process", "PID 424242"), (ws, out))
    assert invoke(*fit_args(ws, out)).exit_code == 0  # released: the same command now runs


def test_a_second_fit_into_the_same_folder_is_refused_and_a_killed_one_resumes(ws, tmp_path):
    rows = [{"id": f"d{i}", "text": f"{TEXTS[i % len(TEXTS)]} {TEXTS[(i * 3 + 1) % len(TEXTS)]}"} for i in range(160)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    args = ["fit", "--model", ws / "model", "--corpus", corpus, "--batch-size", 2, "--shard-size", 4,
            "--max-length", 48, "-q"]
    reference = invoke(*args, "--out", tmp_path / "reference")
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "wherefrom", *map(str, args), "--out", str(out)], env=env)
    state = out / ".shards" / "covariance.rank0-of-1.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not state.is_file():
        time.sleep(0.01)
    try:
        refused([*args, "--out", out], ("another wherefrom process", f"PID {process.pid}"), ())
    finally:
        process.send_signal(signal.SIGKILL)  # kill -9 halfway
        process.wait()
    assert not (out / "manifest.json").exists(), "the fit finished before it could be killed"
    resumed = invoke(*args, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    got, expected = load_file(str(out / "factors.safetensors")), load_file(str(tmp_path / "reference" / "factors.safetensors"))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_options_are_pinned_by_finished_shards_only(ws, tmp_path):
    out = tmp_path / "run"
    (out / ".shards").mkdir(parents=True)  # a fit that crashed before finishing any shard left its job file
    (out / ".shards" / "job.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}) + "\n")
    result = invoke(*fit_args(ws, out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["kind"] == "run"


def test_a_stale_lock_and_partial_files_left_by_a_killed_process_do_not_block(ws, tmp_path):
    out = Path(shutil.copytree(ws / "run", tmp_path / "run"))
    (out / ".wherefrom.lock").write_text(json.dumps({"kind": "run", "pid": 999999}))
    (out / "manifest.json.999999.partial").write_text('{"trunc')
    result = invoke(*fit_args(ws, out))  # the same fit: finds its finished run
    assert result.exit_code == 0, result.output
    assert invoke(*score_args(ws, tmp_path / "scores", run=out)).exit_code == 0


# Pickle is never read unless asked for.

def test_pickle_weights_are_refused_unless_allowed(ws, tmp_path):
    model = tmp_path / "pickled"
    llama = tiny_llama()
    llama.config.save_pretrained(model)
    torch.save(llama.state_dict(), model / "pytorch_model.bin")
    char_tokenizer().save_pretrained(model)
    assert (model / "pytorch_model.bin").is_file() and not list(model.glob("*.safetensors"))
    refused(["fit", "--model", model, "--corpus", ws / "corpus.jsonl", "--out", tmp_path / "run", "-q"],
            ("pickle", "pytorch_model.bin", "--allow-pickle", "save_pretrained"), (model,))
    assert not (tmp_path / "run" / "manifest.json").exists()
    allowed = invoke("fit", "--model", model, "--corpus", ws / "corpus.jsonl", "--out", tmp_path / "run", "-q",
                     "--max-length", 32, "--allow-pickle")
    assert allowed.exit_code == 0, allowed.output
    assert invoke(*score_args(ws, tmp_path / "scores", run=tmp_path / "run")).exit_code == 0  # the run remembers


def test_a_hostile_pickle_is_never_unpickled(ws, tmp_path):
    model = tmp_path / "hostile"
    save_model_dir(tiny_llama(), model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weights": Payload()}, model / "pytorch_model.bin")
    refused(["fit", "--model", model, "--corpus", ws / "corpus.jsonl", "--out", tmp_path / "run", "-q"],
            ("pickle",), (model,))
    refused(["fit", "--model", model, "--corpus", ws / "corpus.jsonl", "--out", tmp_path / "run2", "-q",
             "--allow-pickle"], ("cannot load the model",), (model,))  # transformers' restricted unpickler refuses it
    assert not marker.exists()


# One line, not a traceback, for bad files.

def test_token_ids_outside_the_vocabulary_are_refused(ws, tmp_path):
    for ids, needle in (([3, 10**9], "outside the model's vocabulary"), ([3, -1], "negative token id"),
                        ([3, True], "list of integers"), ("abc", "list of integers")):
        corpus = write_jsonl(tmp_path / "ids.jsonl", [{"id": "bad", "input_ids": ids}])
        refused(["fit", "--model", ws / "model", "--corpus", corpus, "--out", tmp_path / "run", "-q"],
                (needle, "bad"), (ws,))
        queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "prompt_ids": [3, 4], "completion_ids": ids}])
        refused(["score", "--run", ws / "run", "--queries", queries, "--out", tmp_path / "s", "-q"],
                (needle, "q1"), (ws,))


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_a_corpus_that_is_not_utf8_is_named_by_line_and_byte(ws, tmp_path, suffix):
    first = b'{"text": "the cat sat."}\n' if suffix == ".jsonl" else b"the cat sat.\n"
    corpus = tmp_path / f"latin1{suffix}"
    second = '{"text": "caf\u00e9"}' if suffix == ".jsonl" else "caf\u00e9 au lait"
    corpus.write_bytes(first + second.encode("latin-1") + b"\n")
    offset = len(first) + second.index("\u00e9")
    refused(["fit", "--model", ws / "model", "--corpus", corpus, "--out", tmp_path / "run", "-q"],
            ("not UTF-8", "line 2", f"byte offset {offset}", str(corpus)), (ws, corpus))


def test_max_length_is_capped_at_the_models_positions(ws, tmp_path):
    model = save_model_dir(tiny_gpt2(), tmp_path / "gpt2")  # 64 positions
    corpus = write_jsonl(tmp_path / "long.jsonl", [{"text": " ".join(TEXTS)}, {"text": TEXTS[0]}])  # > 64 tokens
    result = invoke("fit", "--model", model, "--corpus", corpus, "--out", tmp_path / "run")  # default --max-length 512
    assert result.exit_code == 0, result.output
    assert result.output.count("model's 64 positions; using 64") == 1
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["options"]["max_length"] == 64
    long_query = write_jsonl(tmp_path / "q.jsonl", [{"id": "long", "prompt": " ".join(TEXTS), "completion": " x"}])
    refused(["score", "--run", tmp_path / "run", "--queries", long_query, "--out", tmp_path / "s", "-q"],
            ("query long", "over --max-length 64"), (tmp_path / "run",))
    llama_query = write_jsonl(tmp_path / "q2.jsonl", [{"id": "long", "prompt": " ".join(TEXTS * 2), "completion": " x"}])
    refused(["score", "--run", ws / "run", "--queries", llama_query, "--out", tmp_path / "s", "-q", "--max-length",
             512], ("query long", "over --max-length 64"), (ws,))


def test_a_model_folder_without_weights_or_with_damaged_files(ws, tmp_path):
    model = Path(shutil.copytree(ws / "model", tmp_path / "model"))
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").unlink()
    fit = ["fit", "--model", model, "--corpus", ws / "corpus.jsonl", "--out", tmp_path / "run", "-q"]
    refused(fit, ("no model weights",), (model,))
    (model / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    refused(fit, ("cannot load the model",), (model,))
    (model / "model.safetensors").write_bytes(weights)
    (model / "config.json").write_text("{not json")
    refused(fit, ("cannot load the model",), (model,))
    refused(["fit", "--model", ws / "corpus.jsonl", "--corpus", ws / "corpus.jsonl", "--out", tmp_path / "run", "-q"],
            ("not a .gguf file",), (ws,))


@pytest.mark.parametrize(("damage", "needles"), [
    ("truncated factors", ("factors.safetensors is damaged", "--restart")),
    ("manifest not JSON", ("manifest.json is not valid JSON", "--restart")),
    ("manifest a list", ("not a JSON object",)),
    ("wrong type", ("n_sequences is str, not int",)),
    ("layers not a list", ("layers is dict, not list",)),
    ("layer without name", ("lacks layers[0].name",)),
    ("missing tensors", ("lacks", "eigenvalues")),
])
def test_a_damaged_run_is_refused(ws, tmp_path, damage, needles):
    run = damaged_copy(ws, "run", tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    if damage == "truncated factors":
        data = (run / "factors.safetensors").read_bytes()
        (run / "factors.safetensors").write_bytes(data[: len(data) - 100])
    elif damage == "manifest not JSON":
        (run / "manifest.json").write_text((run / "manifest.json").read_text()[:-20])
    elif damage == "manifest a list":
        (run / "manifest.json").write_text("[1, 2]")
    elif damage == "missing tensors":
        from safetensors.torch import save_file

        tensors = load_file(str(run / "factors.safetensors"))
        save_file({k: v for k, v in tensors.items() if not k.endswith("eigenvalues")}, str(run / "factors.safetensors"))
    else:
        changes = {"wrong type": {"n_sequences": "8"}, "layers not a list": {"layers": {}},
                   "layer without name": {"layers": [{"in_features": 3}]}}[damage]
        (run / "manifest.json").write_text(json.dumps({**manifest, **changes}))
    for command in (score_args(ws, tmp_path / "s", run=run), ["index", "--run", run, "--out", tmp_path / "i", "-q"],
                    ["check", "--run", run]):
        refused(command, needles, (ws, run))


@pytest.mark.parametrize(("damage", "needles"), [
    ("truncated scores", ("scores.safetensors is damaged",)),
    ("sequences not JSON", ("sequences.jsonl, line 2", "not valid JSON")),
    ("sequence of wrong type", ("sequences.jsonl, record 1", "'text' is int")),
    ("sequence missing", ("is damaged", "7 sequences")),
    ("manifest not JSON", ("manifest.json is not valid JSON",)),
    ("no scores", ("holds no finished scores",)),
])
def test_a_damaged_score_folder_is_refused(ws, tmp_path, damage, needles):
    out = damaged_copy(ws, "scores", tmp_path)
    sequences = (out / "sequences.jsonl").read_text().splitlines()
    if damage == "truncated scores":
        (out / "scores.safetensors").write_bytes((out / "scores.safetensors").read_bytes()[:-8])
    elif damage == "sequences not JSON":
        (out / "sequences.jsonl").write_text("\n".join([sequences[0], sequences[1][:30], *sequences[2:]]) + "\n")
    elif damage == "sequence of wrong type":
        (out / "sequences.jsonl").write_text("\n".join([json.dumps({**json.loads(sequences[0]), "text": 5}),
                                                        *sequences[1:]]) + "\n")
    elif damage == "sequence missing":
        (out / "sequences.jsonl").write_text("\n".join(sequences[:-1]) + "\n")
    elif damage == "manifest not JSON":
        (out / "manifest.json").write_text("{")
    else:
        (out / "scores.safetensors").unlink()
    for command in (["report", out, "-o", tmp_path / "r.html"], ["analyse", out]):
        refused(command, needles, (ws, out))


@pytest.mark.parametrize("damage", ["truncated gradients", "manifest wrong type", "projections missing"])
def test_a_damaged_index_is_refused(ws, tmp_path, damage):
    index = damaged_copy(ws, "index", tmp_path)
    if damage == "truncated gradients":
        (index / "gradients.npy").write_bytes((index / "gradients.npy").read_bytes()[:-64])
    elif damage == "manifest wrong type":
        manifest = json.loads((index / "manifest.json").read_text())
        (index / "manifest.json").write_text(json.dumps({**manifest, "columns": "many"}))
    else:
        (index / "projections.safetensors").unlink()
    refused(score_args(ws, tmp_path / "s", "--index", index), ("damaged", "--restart"), (ws, index))


def test_a_folder_of_another_kind_given_as_an_input_is_named(ws, tmp_path):
    refused(score_args(ws, tmp_path / "s", run=ws / "scores"), ("is a score folder", "not a fitted run"), (ws,))
    refused(score_args(ws, tmp_path / "s", "--index", ws / "run"), ("is a fitted run", "not a gradient index"), (ws,))
    refused(["report", ws / "run", "-o", tmp_path / "r.html"], ("is a fitted run", "not a score folder"), (ws,))
    refused(["check", "--run", ws / "index"], ("is a gradient index",), (ws,))
    refused(["serve", "--index", ws / "run"], ("is a fitted run",), (ws,))


# Messages that mislead, and what a careful user tries next.

def test_a_query_with_only_prompt_ids_is_completed_by_the_model(ws, tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "ids", "prompt_ids": [0, 22, 10, 7]}])
    result = invoke("score", "--run", ws / "run", "--queries", queries, "--out", tmp_path / "s", "--max-new-tokens", 3,
                    "-q")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "s" / "queries.jsonl").read_text().splitlines()[0])
    assert written["prompt_ids"] == [0, 22, 10, 7] and 1 <= len(written["completion_ids"]) <= 3
    empty = write_jsonl(tmp_path / "e.jsonl", [{"id": "e", "prompt_ids": [0, 22], "completion_ids": []}])
    output = refused(["score", "--run", ws / "run", "--queries", empty, "--out", tmp_path / "s2", "-q"],
                     ("completion is empty", "'completion_ids'"), (ws,))
    assert "'completion'" not in output


@pytest.mark.parametrize(("rows", "needles"), [
    ("", ("holds no query",)),
    ("\n\n", ("holds no query",)),
    ("[1, 2]\n", ("line 1", "expected a JSON object")),
    ('{"prompt": 5, "completion": "x"}\n', ("'prompt' must be a string",)),
    ('{"prompt": "a", "completion": ["x"]}\n', ("'completion' must be a string",)),
    ('{"messages": ["hi"]}\n', ("'messages' must be a list of",)),
    ('{"text": "no prompt"}\n', ("needs 'prompt'",)),
    ('{"prompt": "a", "completion": "b"\n', ("line 1", "not valid JSON")),
])
def test_malformed_queries_are_named(ws, tmp_path, rows, needles):
    queries = tmp_path / "q.jsonl"
    queries.write_text(rows)
    refused(["score", "--run", ws / "run", "--queries", queries, "--out", tmp_path / "s", "-q"], needles, (ws, queries))


@pytest.mark.parametrize(("name", "content", "needles"), [
    ("empty.jsonl", b"", ("is empty",)),
    ("blank.txt", b"\n  \n", ("is empty",)),
    ("types.jsonl", b'{"text": 5}\n', ("needs a 'text' string",)),
    ("corpus.csv", b"text\nhello\n", ("cannot read corpus",)),
    ("broken.parquet", b"PAR1 not really", ("as parquet",)),
])
def test_malformed_corpora_are_named(ws, tmp_path, name, content, needles):
    corpus = tmp_path / name
    corpus.write_bytes(content)
    refused(["fit", "--model", ws / "model", "--corpus", corpus, "--out", tmp_path / "run", "-q"], needles,
            (ws, corpus))


def test_a_report_never_replaces_a_file_another_tool_wrote(ws, tmp_path):
    page = tmp_path / "notes.html"
    page.write_text("<html>my own notes</html>")
    refused(["report", ws / "scores", "-o", page], ("was not written by wherefrom",), (ws, page))
    refused(["report", ws / "scores", "-o", ws / "scores" / "results.jsonl"], ("was not written by wherefrom",), (ws,))
    assert invoke("report", ws / "scores", "-o", tmp_path / "r.html", "--bootstraps", 0).exit_code == 0
    assert invoke("report", ws / "scores", "-o", tmp_path / "r.html", "--bootstraps", 0).exit_code == 0  # its own


@pytest.mark.parametrize(("args", "needles"), [
    (["fit", "--batch-size", 0], ("--batch-size must be at least 1",)),
    (["fit", "--shard-size", -2], ("--shard-size must be at least 1",)),
    (["score", "--batch-size", 0], ("--batch-size must be at least 1",)),
    (["score", "--top-k", 0], ("--top-k must be at least 1",)),
    (["score", "--max-new-tokens", 0], ("--max-new-tokens must be at least 1",)),
    (["score", "--per-token-top", 5], ("--per-token-top N says which sequences keep token shares",
                                       "give --per-token too")),
    (["score", "--per-token", "--per-token-top", 0], ("--per-token-top must be at least 1",)),
    (["score", "--sample", "--temperature", 0], ("--temperature 0 is out of range", "above 0")),
    (["score", "--queries-folder"], ("is a folder",)),
    (["report", "--top-k", 0], ("top_k must be at least 1",)),
    (["report", "--bootstraps", -1], ("n_bootstrap must be >= 0",)),
    (["report", "-o-folder"], ("is a folder",)),
    (["analyse", "--top-k", 0], ("top_k must be at least 1",)),
    (["check", "--damping", -1], ("--damping -1 is out of range", "above 0")),
    (["demo", "--out-file"], ("is a file",)),
    (["demo", "--out-run"], ("is a fitted run", "not a demo folder")),
    (["validate", "lds", "--out-run"], ("is a fitted run",)),
    (["serve", "--demo-missing"], ("holds no demo run",)),
])
def test_bad_values_are_named(ws, tmp_path, args, needles):
    command, extra = args[0], args[1:]
    full = {
        "fit": lambda: fit_args(ws, tmp_path / "run", *extra),
        "score": lambda: (["score", "--run", ws / "run", "--queries", ws, "--out", tmp_path / "s", "-q"]
                          if extra == ["--queries-folder"] else score_args(ws, tmp_path / "s", *extra)),
        "report": lambda: ["report", ws / "scores", "-o", tmp_path] if extra == ["-o-folder"] else
        ["report", ws / "scores", "-o", tmp_path / "r.html", *extra],
        "analyse": lambda: ["analyse", ws / "scores", *extra],
        "check": lambda: ["check", "--run", ws / "run", *extra],
        "demo": lambda: ["demo", "--reduced", "-q", "--out", ws / ("corpus.jsonl" if extra == ["--out-file"] else "run")],
        "validate": lambda: ["validate", "lds", "--config", "reduced", "-q", "--out", ws / "run"],
        "serve": lambda: ["serve", "--demo", tmp_path / "nowhere"],
    }[command]()
    refused(full, needles, (ws,))

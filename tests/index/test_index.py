"""The gradient index against brute force: autograd gradients, rotated into the fitted eigenbasis in float64."""

from __future__ import annotations

import json

import pytest
import torch
from exact import sequence_gradient
from safetensors.torch import load_file
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.api import fit, score
from wherefrom.cli.main import app
from wherefrom.errors import WherefromError
from wherefrom.index import GradientIndex, build_index
from wherefrom.models.loading import load_model
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, IndexOptions, ScoreOptions

QUERIES = [{"id": "capital", "prompt": "paris is the capital of", "completion": " france."},
           {"id": "cat", "prompt": "the cat", "completion": " sat on the mat."}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    save_model_dir(tiny_llama(dtype=torch.float64), root / "model")
    write_jsonl(root / "corpus.jsonl", [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)])
    write_jsonl(root / "queries.jsonl", QUERIES)
    fit(root / "model", root / "corpus.jsonl", root / "run", FitOptions(batch_size=3, max_length=32), quiet=True)
    fit(root / "model", root / "corpus.jsonl", root / "run-identity",
        FitOptions(batch_size=3, max_length=32, strategy="identity"), quiet=True)
    return root


def brute_force_scores(root, size: int) -> torch.Tensor:
    """Σ_layers Σ_kept q̃_ij g̃_ij / (Λ_ij + λ) from autograd gradients, keeping each layer's ``size`` largest Λ_ij."""
    loaded = load_model(root / "model")
    layers = select_layers(loaded.model, "mlp")
    factors = load_file(str(root / "run" / "factors.safetensors"))
    tokenizer = char_tokenizer()
    train = [sequence_gradient(loaded.model, layers, tokenizer(t)["input_ids"]) for t in TEXTS]
    queries = []
    for q in QUERIES:
        prompt = tokenizer(q["prompt"])["input_ids"]
        completion = tokenizer(q["completion"], add_special_tokens=False)["input_ids"]
        queries.append(sequence_gradient(loaded.model, layers, prompt + completion, first_target=len(prompt)))
    total, offset = torch.zeros(len(QUERIES), len(TEXTS), dtype=torch.float64), 0
    for layer in layers:
        Q_S, Q_A = factors[f"{layer.name}/Q_S"].double(), factors[f"{layer.name}/Q_A"].double()
        Lambda = factors[f"{layer.name}/eigenvalues"].double()
        n = Lambda.numel()
        kept = Lambda.flatten().argsort(descending=True)[:size]
        damping = 0.1 * Lambda.mean()

        def rotate(g: torch.Tensor) -> torch.Tensor:
            return (Q_S.T @ g[offset:offset + n].double().reshape(Lambda.shape) @ Q_A).flatten()[kept]  # noqa: B023

        weights = 1 / (Lambda.flatten()[kept] + damping)
        total += torch.stack([rotate(q) * weights for q in queries]) @ torch.stack([rotate(g) for g in train]).T
        offset += n
    return total


@pytest.mark.parametrize("size", [10**6, 100])
def test_index_scores_equal_brute_force_on_the_kept_entries(workspace, tmp_path, size):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                                    size=size), quiet=True)
    assert str(index.gradients.dtype) == "float16"
    got = score(workspace / "run", workspace / "queries.jsonl", options=ScoreOptions(max_length=32, batch_size=3),
                index=index.folder, quiet=True).scores.double()
    expected = brute_force_scores(workspace, size)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3 * float(expected.abs().max()))


def test_a_full_size_index_agrees_with_exact_scoring_and_rescoring_is_exact(workspace, tmp_path):
    options = ScoreOptions(max_length=32, batch_size=3, per_token=True)
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32, size=10**6),
                quiet=True)
    full = score(workspace / "run", workspace / "queries.jsonl", options=options, quiet=True)
    rescored = score(workspace / "run", workspace / "queries.jsonl", options=ScoreOptions(
        max_length=32, batch_size=3, per_token=True, rescore=2), index=tmp_path / "index", quiet=True)
    rows = [s.row for s in rescored.sequences]
    assert set(rows) == {r for q in range(2) for r in full.top(q, 2)}  # the union of each query's top 2
    torch.testing.assert_close(rescored.scores, full.scores[:, rows])
    assert rescored.per_token is not None and "gradient index" in rescored.metadata["columns"]


def test_index_layers_split_the_score(workspace, tmp_path):
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32), quiet=True)
    result = score(workspace / "run", workspace / "queries.jsonl", index=tmp_path / "index", quiet=True,
                   options=ScoreOptions(max_length=32, batch_size=3, per_layer=True))
    assert result.per_layer.shape == (6, 2, len(TEXTS))
    torch.testing.assert_close(result.per_layer.sum(0), result.scores, rtol=1e-5, atol=1e-6)


def test_bad_index_requests_are_refused_clearly(workspace, tmp_path):
    with pytest.raises(WherefromError, match="eigenbasis"):
        build_index(workspace / "run-identity", tmp_path / "identity-index", quiet=True)
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32), quiet=True)
    before = (tmp_path / "index" / "gradients.npy").read_bytes()
    with pytest.raises(WherefromError, match="--restart"):
        build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32, size=7),
                    quiet=True)
    assert (tmp_path / "index" / "gradients.npy").read_bytes() == before
    queries = workspace / "queries.jsonl"
    for options, index, message in [
        (ScoreOptions(max_length=32, per_token=True), tmp_path / "index", "--rescore"),
        (ScoreOptions(max_length=32, rescore=3), None, "--index"),
        (ScoreOptions(max_length=32, candidates=3), tmp_path / "index", "one of them"),
        (ScoreOptions(max_length=32), tmp_path / "missing", "not a finished gradient index"),
    ]:
        with pytest.raises(WherefromError, match=message):
            score(workspace / "run", queries, options=options, index=index, quiet=True)
    with pytest.raises(WherefromError, match="another corpus"):
        write_jsonl(tmp_path / "other.jsonl", [{"text": "an entirely different corpus."}])
        score(workspace / "run", queries, corpus=tmp_path / "other.jsonl", index=tmp_path / "index", quiet=True,
              options=ScoreOptions(max_length=32))


def test_cli_index_then_score_from_it(workspace, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["index", "--run", str(workspace / "run"), "--out", str(tmp_path / "index"),
                                 "--size", "64"])
    assert result.exit_code == 0, result.output
    assert f"indexed {len(TEXTS)} sequences" in result.output
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["bytes_per_sequence"] == 6 * 64 * 2 + 8 and not (tmp_path / "index" / ".shards").exists()
    assert GradientIndex.open(tmp_path / "index").gradients.shape == (len(TEXTS), 6 * 64)
    result = runner.invoke(app, ["score", "--run", str(workspace / "run"), "--queries", str(workspace / "queries.jsonl"),
                                 "--index", str(tmp_path / "index"), "--out", str(tmp_path / "out"), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    top = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])["top"]
    assert len(top) == 3 and top[0]["record_id"] == "doc-2"  # "paris is the capital of france."


def test_candidates_score_the_union_of_each_querys_bm25_top(workspace, tmp_path):
    from wherefrom.scoring.candidates import CandidateIndex

    result = score(workspace / "run", workspace / "queries.jsonl", quiet=True,
                   options=ScoreOptions(max_length=32, batch_size=3, candidates=2))
    tokenizer = char_tokenizer()
    corpus = [tokenizer(t)["input_ids"] for t in TEXTS]
    bm25 = CandidateIndex.from_corpus(corpus)
    expected = set()
    for q in QUERIES:
        ids = tokenizer(q["prompt"])["input_ids"] + tokenizer(q["completion"], add_special_tokens=False)["input_ids"]
        expected |= set(bm25.top(ids, 2).tolist())
    assert [s.row for s in result.sequences] == sorted(expected)
    assert list((workspace / "run").glob("bm25-*.npz")), "the BM25 index is kept in the run folder for reuse"


def test_dry_run_predicts_the_index_files(workspace, tmp_path):
    from wherefrom.costs.index_plan import estimate_index

    options = IndexOptions(batch_size=3, max_length=32, size=100)
    estimate = estimate_index(workspace / "run", None, options)
    assert not (tmp_path / "index").exists()
    build_index(workspace / "run", tmp_path / "index", options=options, quiet=True)
    for name in ("gradients.npy", "scales.npy", "self_influence.npy"):
        assert estimate.disk[name] == (tmp_path / "index" / name).stat().st_size, name
    real = (tmp_path / "index" / "projections.safetensors").stat().st_size
    assert abs(estimate.disk["projections.safetensors"] - real) <= 64  # the safetensors header's padding

"""The gradient index against brute force: autograd gradients, rotated into the fitted eigenbasis in float64."""

from __future__ import annotations

import json

import pytest
import torch
from exact import sequence_gradient
from safetensors.torch import load_file
from tiny import QUERIES, TEXTS, char_tokenizer, tiny_llama, write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.api import fit, score
from wherefrom.cli.main import app
from wherefrom.errors import WherefromError
from wherefrom.index import GradientIndex, build_index
from wherefrom.models.loading import load_model
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, IndexOptions, ScoreOptions


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    write_workspace(root, tiny_llama(dtype=torch.float64))
    fit(root / "model", root / "corpus.jsonl", root / "run", FitOptions(batch_size=3, max_length=32), quiet=True)
    fit(root / "model", root / "corpus.jsonl", root / "run-identity",
        FitOptions(batch_size=3, max_length=32, strategy="identity"), quiet=True)
    return root


def brute_force_scores(root, values: int) -> torch.Tensor:
    """Σ_kept q̃_ij g̃_ij / (Λ_ij + λ) from autograd gradients in float64, keeping the ``values`` entries with the
    largest Λ_ij / (Λ_ij + λ) over all layers together (λ = 0.1 × the layer's mean Λ)."""
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
    Lambdas = [factors[f"{layer.name}/eigenvalues"].double() for layer in layers]
    ratio = torch.cat([(L / (L + 0.1 * L.mean())).flatten() for L in Lambdas])
    chosen = torch.zeros(ratio.numel(), dtype=torch.bool)
    chosen[ratio.argsort(descending=True)[:values]] = True
    total, offset, entry = torch.zeros(len(QUERIES), len(TEXTS), dtype=torch.float64), 0, 0
    for layer, Lambda in zip(layers, Lambdas):
        Q_S, Q_A = factors[f"{layer.name}/Q_S"].double(), factors[f"{layer.name}/Q_A"].double()
        n = Lambda.numel()
        kept = chosen[entry:entry + n]

        def rotate(g: torch.Tensor) -> torch.Tensor:
            return (Q_S.T @ g[offset:offset + n].double().reshape(Lambda.shape) @ Q_A).flatten()[kept]  # noqa: B023

        weights = 1 / (Lambda.flatten()[kept] + 0.1 * Lambda.mean())
        total += torch.stack([rotate(q) * weights for q in queries]) @ torch.stack([rotate(g) for g in train]).T
        offset += n
        entry += n
    return total


RAW = ScoreOptions(max_length=32, batch_size=3, rescore=0)  # the index's own scores of every sequence


@pytest.mark.parametrize("values", [100, 700])
def test_index_scores_equal_brute_force_on_the_globally_kept_entries(workspace, tmp_path, values):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                                    budget=str(values)), quiet=True)
    assert str(index.gradients.dtype) == "float16" and index.gradients.shape[1] == values
    sizes = [p.size for p in index.projections.values()]
    assert len(set(sizes)) > 1, "the budget is spread by the curvature, not equally over the layers"
    got = score(None, workspace / "queries.jsonl", options=RAW, index=index.folder, quiet=True).scores.double()
    expected = brute_force_scores(workspace, values)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3 * float(expected.abs().max()))


def test_a_full_budget_index_is_full_ekfac(workspace, tmp_path):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                                    budget="full"), quiet=True)
    assert str(index.gradients.dtype) == "float32"
    got = score(None, workspace / "queries.jsonl", options=RAW, index=index.folder, quiet=True).scores.double()
    exact = score(workspace / "run", workspace / "queries.jsonl", options=ScoreOptions(max_length=32, batch_size=3),
                  quiet=True).scores.double()
    assert got.shape == exact.shape
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-5 * float(exact.abs().max()))


@pytest.mark.parametrize("budget, limit", [("1000B", 1000), ("1.5KB", 1500), ("2KiB", 2048), ("777", 777 * 2 + 4),
                                           ("1MB", 10**6)])
def test_the_budget_is_respected_to_the_byte(workspace, tmp_path, budget, limit):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                                    budget=budget), quiet=True)
    n, d = index.gradients.shape
    stored = (tmp_path / "index" / "gradients.npy").stat().st_size + (tmp_path / "index" / "scales.npy").stat().st_size
    header = 2 * 128  # each .npy file's header
    per_sequence = index.gradients.dtype.itemsize * d + index.scales.dtype.itemsize
    assert index.manifest["bytes_per_sequence"] == per_sequence == (stored - header) / n
    total = sum(p.Q_S.shape[0] * p.Q_A.shape[0] for p in index.projections.values())
    assert per_sequence <= limit
    if d < total:
        assert per_sequence + 2 > limit, "one more float16 value would have fitted"
    else:
        assert str(index.gradients.dtype) == "float32" or total * 4 + 4 > limit  # float32 when everything fits


def test_a_full_size_index_agrees_with_exact_scoring_and_rescoring_is_exact(workspace, tmp_path):
    options = ScoreOptions(max_length=32, batch_size=3, per_token=True)
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                            budget="200"), quiet=True)
    full = score(workspace / "run", workspace / "queries.jsonl", options=options, quiet=True)
    index_top = score(None, workspace / "queries.jsonl", options=RAW, index=tmp_path / "index", quiet=True)
    rescored = score(None, workspace / "queries.jsonl", options=ScoreOptions(
        max_length=32, batch_size=3, per_token=True, rescore=2), index=tmp_path / "index", quiet=True)
    rows = [s.row for s in rescored.sequences]
    assert set(rows) == {r for q in range(2) for r in index_top.top(q, 2)}  # the union of each query's top 2
    torch.testing.assert_close(rescored.scores, full.scores[:, rows])
    assert rescored.per_token is not None and "gradient index" in rescored.metadata["columns"]
    by_default = score(None, workspace / "queries.jsonl", options=ScoreOptions(max_length=32, batch_size=3),
                       index=tmp_path / "index", quiet=True)  # rescores each query's top 100: here every sequence
    torch.testing.assert_close(by_default.scores, full.scores)


def test_index_layers_split_the_score(workspace, tmp_path):
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32), quiet=True)
    result = score(workspace / "run", workspace / "queries.jsonl", index=tmp_path / "index", quiet=True,
                   options=ScoreOptions(max_length=32, batch_size=3, per_layer=True, rescore=0))
    assert result.per_layer.shape == (6, 2, len(TEXTS))
    torch.testing.assert_close(result.per_layer.sum(0), result.scores, rtol=1e-5, atol=1e-6)


def test_bad_index_requests_are_refused_clearly(workspace, tmp_path):
    with pytest.raises(WherefromError, match="eigenbasis"):
        build_index(workspace / "run-identity", tmp_path / "identity-index", quiet=True)
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32), quiet=True)
    before = (tmp_path / "index" / "gradients.npy").read_bytes()
    with pytest.raises(WherefromError, match="--restart"):
        build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32, budget="7"),
                    quiet=True)
    assert (tmp_path / "index" / "gradients.npy").read_bytes() == before
    queries = workspace / "queries.jsonl"
    for options, index, message in [
        (ScoreOptions(max_length=32, per_token=True, rescore=0), tmp_path / "index", "--rescore 0"),
        (ScoreOptions(max_length=32, rescore=-1), tmp_path / "index", "--rescore must be 0"),
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
                                 "--budget", "1KB"])
    assert result.exit_code == 0, result.output
    assert f"indexed {len(TEXTS)} sequences" in result.output
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["bytes_per_sequence"] == 1000 and not (tmp_path / "index" / ".shards").exists()
    assert GradientIndex.open(tmp_path / "index").gradients.shape == (len(TEXTS), 498)
    for rescore, listed in (("0", 3), ("1", 2)):  # the index alone; the union of each query's top 1, rescored
        result = runner.invoke(app, ["score", "--queries", str(workspace / "queries.jsonl"), "--rescore", rescore,
                                     "--index", str(tmp_path / "index"), "--out", str(tmp_path / rescore), "--top-k", "3"])
        assert result.exit_code == 0, result.output
        top = json.loads((tmp_path / rescore / "results.jsonl").read_text().splitlines()[0])["top"]
        assert top[0]["record_id"] == "doc-2"  # "paris is the capital of france."
        assert len(top) == listed
    result = runner.invoke(app, ["score", "--queries", str(workspace / "queries.jsonl"), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--run" in result.output and "--index" in result.output
    result = runner.invoke(app, ["index", "--run", str(workspace / "run"), "--out", str(tmp_path / "bad"),
                                 "--budget", "lots"])
    assert result.exit_code != 0 and "--budget 'lots'" in result.output and not (tmp_path / "bad").exists()


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

    options = IndexOptions(batch_size=3, max_length=32, budget="300B")
    estimate = estimate_index(workspace / "run", None, options)
    assert not (tmp_path / "index").exists()
    build_index(workspace / "run", tmp_path / "index", options=options, quiet=True)
    for name in ("gradients.npy", "scales.npy", "self_influence.npy"):
        assert estimate.disk[name] == (tmp_path / "index" / name).stat().st_size, name
    real = (tmp_path / "index" / "projections.safetensors").stat().st_size
    assert abs(estimate.disk["projections.safetensors"] - real) <= 64  # the safetensors header's padding
    assert any("300 bytes per sequence" in note for note in estimate.notes)


def test_dry_run_of_score_with_an_index_counts_the_rescoring(workspace, tmp_path):
    from wherefrom.costs.plans import estimate_score

    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32, budget="300"),
                quiet=True)
    queries = workspace / "queries.jsonl"
    stages = {s.name: s for s in estimate_score(None, queries, index=tmp_path / "index").stages}
    assert "index contraction" in stages and "scoring pass" not in stages
    assert f"at most {len(TEXTS)} sequences" in stages["re-scoring the index's top"].detail  # 2 queries × 100 > N
    raw = estimate_score(None, queries, options=ScoreOptions(max_length=32, rescore=0), index=tmp_path / "index")
    assert [s.name for s in raw.stages][-1] == "index contraction"

"""The gradient index against brute force: autograd gradients, rotated into the fitted eigenbasis in float64."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from exact import sequence_gradient
from safetensors.torch import load_file, save_file
from tiny import QUERIES, TEXTS, char_tokenizer, tiny_llama, write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.api import fit, score
from wherefrom.cli.main import app
from wherefrom.errors import WherefromError
from wherefrom.index import GradientIndex, build_index
from wherefrom.index.sketch import buckets_and_signs
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


def rotated_gradients(root) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per tracked layer, from autograd gradients in float64: the queries' and training sequences' gradients in the
    fitted eigenbasis, Q_Sᵀ ∇L Q_A flattened ([Q, n] and [N, n]), and Λ flattened [n]."""
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
    result, offset = [], 0
    for layer in layers:
        Lambda = factors[f"{layer.name}/eigenvalues"].double()
        Q_S, Q_A = factors[f"{layer.name}/Q_S"].double(), factors[f"{layer.name}/Q_A"].double()
        n = Lambda.numel()

        def rotate(g: torch.Tensor) -> torch.Tensor:
            return (Q_S.T @ g[offset:offset + n].double().reshape(Lambda.shape) @ Q_A).flatten()  # noqa: B023

        result.append((torch.stack([rotate(q) for q in queries]), torch.stack([rotate(g) for g in train]),
                       Lambda.flatten()))
        offset += n
    return result


def brute_force_scores(root, values: int) -> torch.Tensor:
    """Σ_kept q̃_ij g̃_ij / (Λ_ij + λ) in float64, keeping the ``values`` entries with the largest Λ_ij / (Λ_ij + λ)
    over all layers together (λ = 0.1 × the layer's mean Λ)."""
    layers = rotated_gradients(root)
    ratio = torch.cat([Lambda / (Lambda + 0.1 * Lambda.mean()) for _, _, Lambda in layers])
    chosen = torch.zeros(ratio.numel(), dtype=torch.bool)
    chosen[ratio.argsort(descending=True)[:values]] = True
    total, entry = torch.zeros(len(QUERIES), len(TEXTS), dtype=torch.float64), 0
    for q, g, Lambda in layers:
        kept = chosen[entry:entry + Lambda.numel()]
        total += (q[:, kept] / (Lambda[kept] + 0.1 * Lambda.mean())) @ g[:, kept].T
        entry += Lambda.numel()
    return total


def brute_force_sketch_scores(root, index: GradientIndex) -> torch.Tensor:
    """Per layer [L, Q, N], in float64: each layer's whitened gradients w = g̃/√(Λ+λ) and w_q = q̃/(Λ+λ)·√(Λ+λ)
    multiplied by its explicit CountSketch matrix S_l [D, n] (S_l[h(j), j] = s(j), the index's hash with the
    layer's seed); the training rows Σ_l S_l w_l kept as signs with the scale √(π/2)·RMS; each layer's estimate
    scale · ⟨S_l w_q, signs⟩."""
    queries, rows = [], 0
    for (q, g, Lambda), projection in zip(rotated_gradients(root), index.projections.values()):
        n, buckets = Lambda.numel(), projection.size
        bucket, sign = buckets_and_signs(0, n, buckets, projection.seed, torch.device("cpu"))
        S = torch.zeros(buckets, n, dtype=torch.float64)
        S[bucket, torch.arange(n)] = sign.double()
        root_ = (Lambda + 0.1 * Lambda.mean()).sqrt()
        queries.append(q / (Lambda + 0.1 * Lambda.mean()) * root_ @ S.T)
        rows = rows + g / root_ @ S.T
    scale = (torch.pi / 2) ** 0.5 * rows.pow(2).mean(1).sqrt()
    return torch.stack([q @ torch.where(rows > 0, 1.0, -1.0).double().T * scale for q in queries])


RAW = ScoreOptions(max_length=32, batch_size=3, rescore=0)  # the index's own scores of every sequence


@pytest.mark.parametrize("values", [100, 700])
def test_index_scores_equal_brute_force_on_the_globally_kept_entries(workspace, tmp_path, values):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(
        batch_size=3, max_length=32, budget=str(values), compression="entries"), quiet=True)
    assert str(index.gradients.dtype) == "float16" and index.gradients.shape[1] == values
    sizes = [p.size for p in index.projections.values()]
    assert len(set(sizes)) > 1, "the budget is spread by the curvature, not equally over the layers"
    got = score(None, workspace / "queries.jsonl", options=RAW, index=index.folder, quiet=True).scores.double()
    expected = brute_force_scores(workspace, values)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("budget, buckets", [("1024", 1024), ("200B", 1536)])
def test_sketch_index_scores_equal_brute_force_sketching(workspace, tmp_path, budget, buckets):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(
        batch_size=3, max_length=32, budget=budget), quiet=True)
    assert str(index.gradients.dtype) == "uint8" and index.manifest["compression"] == "sketch"
    assert index.values == 8 * index.gradients.shape[1] == buckets
    got = score(None, workspace / "queries.jsonl", index=index.folder, quiet=True,
                options=ScoreOptions(max_length=32, batch_size=3, rescore=0, per_layer=True))
    expected = brute_force_sketch_scores(workspace, index)
    # per layer (more query rows than bit planes take) the host's int8 kernel takes the query in bfloat16 and
    # rounds each product sum to bfloat16 (2⁻⁹ relative); the whole scores go by bit planes (12-bit query)
    torch.testing.assert_close(got.per_layer.double(), expected, rtol=0, atol=5e-3 * float(expected.abs().max()))
    whole = index.scores(_query_gradients(workspace)).double()
    torch.testing.assert_close(whole, expected.sum(0), rtol=0, atol=5e-3 * float(expected.sum(0).abs().max()))


def _query_gradients(root):
    from wherefrom.data.queries import read_queries
    from wherefrom.scoring.generation import complete_queries
    from wherefrom.scoring.query_gradients import query_gradients

    loaded = load_model(root / "model")
    options = ScoreOptions(max_length=32, batch_size=3)
    queries = complete_queries(loaded.model, loaded.tokenizer, read_queries(root / "queries.jsonl", loaded.tokenizer, 32),
                               options, True)
    return query_gradients(loaded.model, select_layers(loaded.model, "mlp"), queries, 3, True)


def test_a_full_budget_index_is_full_ekfac(workspace, tmp_path):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                                    budget="full"), quiet=True)
    assert str(index.gradients.dtype) == "float32"
    got = score(None, workspace / "queries.jsonl", options=RAW, index=index.folder, quiet=True).scores.double()
    exact = score(workspace / "run", workspace / "queries.jsonl", options=ScoreOptions(max_length=32, batch_size=3),
                  quiet=True).scores.double()
    assert got.shape == exact.shape
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-5 * float(exact.abs().max()))


@pytest.mark.parametrize("compression, budget, limit", [
    ("entries", "1000B", 1000), ("entries", "1.5KB", 1500), ("entries", "2KiB", 2048), ("entries", "777", 777 * 2 + 4),
    ("entries", "1MB", 10**6), ("sketch", "1000B", 1000), ("sketch", "2KiB", 2048), ("sketch", "1100", 1024 // 8 + 4),
    ("sketch", "1MB", 10**6)])
def test_the_budget_is_respected_to_the_byte(workspace, tmp_path, compression, budget, limit):
    index = build_index(workspace / "run", tmp_path / "index", options=IndexOptions(
        batch_size=3, max_length=32, budget=budget, compression=compression), quiet=True)
    n, d = index.gradients.shape
    stored = (tmp_path / "index" / "gradients.npy").stat().st_size + (tmp_path / "index" / "scales.npy").stat().st_size
    header = 2 * 128  # each .npy file's header
    per_sequence = index.gradients.dtype.itemsize * d + index.scales.dtype.itemsize
    assert index.manifest["bytes_per_sequence"] == per_sequence == (stored - header) / n
    total = sum(p.Q_S.shape[0] * p.Q_A.shape[0] for p in index.projections.values())
    assert per_sequence <= limit
    if str(index.gradients.dtype) == "float16":
        assert d == total or per_sequence + 2 > limit, "one more float16 value would have fitted"
    elif str(index.gradients.dtype) == "uint8":
        assert per_sequence + 64 > limit and d % 64 == 0, "one more block of 512 one-bit buckets would have fitted"
        assert total * 4 + 4 > limit, "a budget that holds every entry in float32 keeps them all"
    else:
        assert d == total and total * 4 + 4 <= limit  # float32 when everything fits


def test_a_full_size_index_agrees_with_exact_scoring_and_rescoring_is_exact(workspace, tmp_path):
    options = ScoreOptions(max_length=32, batch_size=3, per_token=True)
    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32,
                                                                            budget="512"), quiet=True)
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
        build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32, budget="2KB"),
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


def test_an_index_reads_its_bases_from_its_run_and_refuses_them_changed(workspace, tmp_path):
    """The index stores no copy of the run's Q_S, Q_A and Λ (only a sketch's seeds in its manifest, or the kept
    entries); it scores the same from the run moved elsewhere, as an index of format /2 (which held the copies)
    does; it refuses, in one line, a run that is gone or whose factors were replaced (one eigenvector's sign)."""
    shutil.copytree(workspace / "run", tmp_path / "run")
    queries = workspace / "queries.jsonl"
    for budget, compression in (("1024", "sketch"), ("100", "entries")):
        folder = tmp_path / f"index-{compression}"
        build_index(tmp_path / "run", folder, options=IndexOptions(batch_size=3, max_length=32, budget=budget,
                                                                    compression=compression), quiet=True)
        stored = load_file(str(folder / "projections.safetensors"))
        assert all(key.endswith("/entries") for key in stored) and (compression == "entries") == bool(stored)
        factors = (tmp_path / "run" / "factors.safetensors").stat().st_size
        assert (folder / "projections.safetensors").stat().st_size + (folder / "manifest.json").stat().st_size \
            < 0.1 * factors
        expected = score(None, queries, options=RAW, index=folder, quiet=True).scores
        old = tmp_path / f"old-{compression}"  # the same index as format /2 wrote it: the bases copied in
        shutil.copytree(folder, old)
        index = GradientIndex.open(folder)
        bases = {f"{name}/{part}": tensor.contiguous() for name, p in index.projections.items()
                 for part, tensor in (("Q_S", p.Q_S), ("Q_A", p.Q_A), ("eigenvalues", p.eigenvalues))}
        save_file({**bases, **stored}, str(old / "projections.safetensors"))
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["run_factors"]
        (old / "manifest.json").write_text(json.dumps({**manifest, "format": "wherefrom-index/2"}))
        assert torch.equal(score(None, queries, options=RAW, index=old, quiet=True).scores, expected)
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    runner = CliRunner()
    for run, message in ((None, "give --run RUN"), (moved, None)):
        result = runner.invoke(app, ["score", "--queries", str(queries), "--rescore", "0", "--out",
                                     str(tmp_path / f"s-{message is None}"), "--index", str(tmp_path / "index-sketch"),
                                     *(["--run", str(run)] if run else []), "-q"])
        if message is None:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert torch.equal(score(moved, queries, options=RAW, index=tmp_path / "index-sketch", quiet=True).scores,
                       score(moved, queries, options=RAW, index=tmp_path / "old-sketch", quiet=True).scores)
    refitted = load_file(str(moved / "factors.safetensors"))
    key = next(k for k in refitted if k.endswith("/Q_S"))
    refitted[key][:, 0] *= -1  # an eigenvector of the same eigenvalue, as another fit may return it
    save_file(refitted, str(moved / "factors.safetensors"))
    result = runner.invoke(app, ["score", "--queries", str(queries), "--rescore", "0", "--out", str(tmp_path / "s"),
                                 "--index", str(tmp_path / "index-sketch"), "--run", str(moved), "-q"])
    assert result.exit_code == 2 and "other factors than its run holds now" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "--restart" in result.output


def test_cli_index_then_score_from_it(workspace, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["index", "--run", str(workspace / "run"), "--out", str(tmp_path / "index"),
                                 "--budget", "1KB"])
    assert result.exit_code == 0, result.output
    assert f"indexed {len(TEXTS)} sequences" in result.output
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["bytes_per_sequence"] == 964 and not (tmp_path / "index" / ".shards").exists()
    assert manifest["compression"] == "sketch"
    assert GradientIndex.open(tmp_path / "index").gradients.shape == (len(TEXTS), 960)  # 7,680 bits: 15 × 512
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
    for flags, message in ((["--budget", "40B"], "fewer than the 512 buckets a sketch needs"),
                           (["--compression", "zip"], "--compression")):
        result = runner.invoke(app, ["index", "--run", str(workspace / "run"), "--out", str(tmp_path / "bad"), *flags])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


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
    assert any("260 bytes per sequence" in note and "2,048 one-bit buckets" in note for note in estimate.notes)


def test_dry_run_of_score_with_an_index_counts_the_rescoring(workspace, tmp_path):
    from wherefrom.costs.plans import estimate_score

    build_index(workspace / "run", tmp_path / "index", options=IndexOptions(batch_size=3, max_length=32, budget="512"),
                quiet=True)
    queries = workspace / "queries.jsonl"
    stages = {s.name: s for s in estimate_score(None, queries, index=tmp_path / "index").stages}
    assert "index contraction" in stages and "scoring pass" not in stages
    assert f"at most {len(TEXTS)} sequences" in stages["re-scoring the index's top"].detail  # 2 queries × 100 > N
    raw = estimate_score(None, queries, options=ScoreOptions(max_length=32, rescore=0), index=tmp_path / "index")
    assert [s.name for s in raw.stages][-1] == "index contraction"

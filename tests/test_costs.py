"""--dry-run: the estimated disk equals what a real run writes, memory counts equal the tensors the passes
allocate, and nothing is written."""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors.torch import save_file
from tiny import TEXTS, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.api import fit, score
from wherefrom.cli.main import app
from wherefrom.costs import memory
from wherefrom.costs.plans import estimate_fit, estimate_score
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.engine.execution import Execution
from wherefrom.models.loading import load_model
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions

HEADER_TOLERANCE = 64  # bytes: the safetensors header's key order can change the offsets' digit counts


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("costs")
    save_model_dir(tiny_gpt2(), root / "model")  # biased Conv1D layers: in_dim = in_features + 1
    write_jsonl(root / "corpus.jsonl", [{"id": f"d{i}", "text": f"{TEXTS[i % 8]} {TEXTS[(i * 3 + 1) % 8]}"}
                                        for i in range(30)])
    write_jsonl(root / "queries.jsonl", [{"prompt": "paris is the capital of", "completion": " france."},
                                         {"prompt": "the cat", "completion": " sat on the mat."}])
    return root


@pytest.mark.parametrize("strategy, blocks", [("ekfac", 1), ("ekfac", 3), ("kfac", 2), ("diagonal", 1)])
def test_the_fit_disk_estimate_is_the_size_of_the_written_factors(workspace, tmp_path, strategy, blocks):
    options = FitOptions(strategy=strategy, batch_size=8, max_length=32, factor_blocks=blocks, modules="all-linear")
    loaded = load_model(workspace / "model")
    estimate = estimate_fit(loaded, workspace / "corpus.jsonl", options)
    fit(loaded, workspace / "corpus.jsonl", tmp_path / "run", options, quiet=True)
    written = os.path.getsize(tmp_path / "run" / "factors.safetensors")
    assert abs(estimate.disk["factors.safetensors"] - written) <= HEADER_TOLERANCE, (estimate.disk, written)
    assert estimate.n_sequences == 30 and [s.name for s in estimate.stages][0] == "model"


def test_the_time_estimate_is_the_timed_work_per_sequence_times_the_sequences(workspace):
    """A block that sleeps 20 ms per forward call makes every batch take at least that long: the estimate must
    count it (a lower bound that holds however busy the machine is), and scale it by the corpus size."""
    loaded = load_model(workspace / "model")
    pause, batch_size = 0.02, 8
    handle = loaded.model.transformer.h[0].register_forward_hook(lambda *_: time.sleep(pause))
    try:
        estimate = estimate_fit(loaded, workspace / "corpus.jsonl", FitOptions(batch_size=batch_size, max_length=32))
    finally:
        handle.remove()
    assert set(estimate.seconds_per_sequence) == {"covariance", "correction"}
    for name, seconds in estimate.seconds_per_sequence.items():
        assert seconds >= pause / batch_size, (name, seconds)
        stage = next(s for s in estimate.stages if s.name == f"{name} pass")
        assert stage.seconds == pytest.approx(seconds * 30)


def test_the_score_disk_estimate_is_the_size_of_the_written_scores(workspace, tmp_path):
    fit(workspace / "model", workspace / "corpus.jsonl", tmp_path / "run", FitOptions(batch_size=8, max_length=32),
        quiet=True)
    options = ScoreOptions(batch_size=8, max_length=32, per_layer=True, per_token=True, self_influence=True)
    estimate = estimate_score(tmp_path / "run", workspace / "queries.jsonl", options=options)
    score(tmp_path / "run", workspace / "queries.jsonl", out=tmp_path / "out", options=options, quiet=True)
    written = os.path.getsize(tmp_path / "out" / "scores.safetensors")
    assert abs(estimate.disk["scores.safetensors"] - written) <= HEADER_TOLERANCE, (estimate.disk, written)
    assert estimate.disk["sequences.jsonl"] == pytest.approx(os.path.getsize(tmp_path / "out" / "sequences.jsonl"),
                                                             rel=0.2)


def test_the_score_disk_estimate_counts_the_unit_split(workspace, tmp_path):
    fit(workspace / "model", workspace / "corpus.jsonl", tmp_path / "run",
        FitOptions(batch_size=8, max_length=32, modules="all-linear"), quiet=True)
    options = ScoreOptions(batch_size=8, max_length=32, per_unit=5, top_k=4)
    estimate = estimate_score(tmp_path / "run", workspace / "queries.jsonl", options=options)
    score(tmp_path / "run", workspace / "queries.jsonl", out=tmp_path / "out", options=options, quiet=True)
    written = os.path.getsize(tmp_path / "out" / "scores.safetensors")
    assert abs(estimate.disk["scores.safetensors"] - written) <= HEADER_TOLERANCE, (estimate.disk, written)


@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factor_memory_is_the_size_of_the_covariance_sums(blocks, dtype):
    model = tiny_llama(dtype=dtype)
    layers = select_layers(model, "all-linear")
    sums = CovarianceAccumulator(layers, Execution.of(model), blocks).sums
    allocated = sum(t.numel() * t.element_size() for key, t in sums.items() if key.startswith(("A/", "S/")))
    assert memory.factor_sum_bytes(layers, blocks, dtype) == allocated
    largest = max(t.shape[0] for key, t in sums.items() if key.startswith(("A/", "S/")))
    assert memory.largest_block(layers, blocks) == largest


def test_safetensors_size_from_shapes_is_the_file_size(tmp_path):
    tensors = {"b/Q_A/0": torch.zeros(3, 3), "a/eigenvalues": torch.zeros(2, 5, dtype=torch.float64),
               "offsets": torch.zeros(11, dtype=torch.int64), "x": torch.zeros(7, 1000, dtype=torch.bfloat16)}
    save_file(tensors, str(tmp_path / "t.safetensors"))
    shapes = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    assert memory.safetensors_bytes(shapes) == os.path.getsize(tmp_path / "t.safetensors")


def test_dry_runs_print_a_table_and_leave_out_untouched(workspace, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["fit", "--model", str(workspace / "model"), "--corpus", str(workspace / "corpus.jsonl"),
                                 "--out", str(out), "--batch-size", "8", "--factor-blocks", "2", "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "covariance pass" in result.output and "factors.safetensors" in result.output
    assert "eigendecompositions" in result.output and not out.exists()
    fit(workspace / "model", workspace / "corpus.jsonl", out, FitOptions(batch_size=8), quiet=True)
    scores = tmp_path / "scores"
    scores.mkdir()
    (scores / "keep.txt").write_text("mine")
    before = {p.name: p.stat().st_mtime_ns for p in scores.iterdir()}
    result = runner.invoke(app, ["score", "--run", str(out), "--queries", str(workspace / "queries.jsonl"),
                                 "--out", str(scores), "--per-token", "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "scoring pass" in result.output and "scores.safetensors" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in scores.iterdir()} == before


def test_a_dry_run_refuses_a_block_count_the_layers_cannot_hold(workspace):
    result = CliRunner().invoke(app, ["fit", "--model", str(workspace / "model"), "--corpus",
                                      str(workspace / "corpus.jsonl"), "--out", "unused", "--factor-blocks", "99",
                                      "--dry-run", "-q"])
    assert result.exit_code == 2 and "--factor-blocks 99" in result.output


def test_the_timed_batches_are_the_ones_the_pass_forms(workspace):
    """The dry run times parts of a batch cut as run_pass cuts them (by shard, then batch size, shortest rows
    first), padding included: the batch of median padded size."""
    from wherefrom.costs.timing import median_batch, padded_tokens
    from wherefrom.engine.passes import PassPlan, _batches

    tokens = [[1] * (3 + (i * 7) % 11) for i in range(23)]
    plan = PassPlan(tokens, [1] * 23, batch_size=4, shard_size=10)
    formed = list(_batches(plan, plan.shards(), torch.device("cpu")))
    assert plan.batches() == [batch.rows.tolist() for batch in formed]
    sizes = [padded_tokens(plan, rows) for rows in plan.batches()]
    assert sizes == [batch.input_ids.numel() for batch in formed]
    median = padded_tokens(plan, median_batch(plan))
    assert sum(s < median for s in sizes) <= len(sizes) // 2 <= sum(s <= median for s in sizes) - 1


def test_a_pass_batches_rows_of_similar_length_within_each_shard():
    """Every row once, in its own shard; within a shard the rows go shortest first: 10 rows of lengths
    alternating 2 and 20, in batches of 2, pad to 4 + 4 + 40 + 40 + 40 = 128 tokens, against 5 × 40 in corpus
    order."""
    from wherefrom.engine.passes import PassPlan

    lengths = [2, 20] * 5 + [7, 3, 5]
    plan = PassPlan([[1] * n for n in lengths], [1] * len(lengths), batch_size=2, shard_size=10)
    batches = plan.batches()
    assert sorted(r for batch in batches for r in batch) == list(range(len(lengths)))
    assert [sorted(r for batch in batches[:5] for r in batch), sorted(r for batch in batches[5:] for r in batch)] \
        == [list(range(10)), [10, 11, 12]]
    padded = [len(batch) * max(lengths[r] for r in batch) for batch in batches[:5]]
    assert padded == [4, 4, 40, 40, 40] and sum(padded) < 5 * 2 * 20


def test_the_cost_line_goes_through_its_two_samples():
    """Seconds per batch and per token from two samples, by hand; all per token when the samples cannot separate
    them (equal sizes) or noise makes a part negative."""
    from wherefrom.costs.timing import fit_cost_line

    per_batch, per_token = fit_cost_line((10, 0.5 + 10 * 0.1), (40, 0.5 + 40 * 0.1))
    assert per_batch == pytest.approx(0.5) and per_token == pytest.approx(0.1)
    assert fit_cost_line((12, 3.0), (12, 3.6)) == (0.0, pytest.approx(0.3))
    assert fit_cost_line((10, 5.0), (40, 4.0)) == (0.0, pytest.approx(0.1))  # slower small sample: noise
    assert fit_cost_line((10, 0.1), (40, 4.0)) == (0.0, pytest.approx(0.1))  # negative fixed cost: noise


def test_the_eigendecompositions_counted_are_the_ones_the_fit_does(workspace, tmp_path, monkeypatch):
    """A factor shared by layers reading one input (gate_proj, up_proj) is decomposed once, by the fit and in the
    dry run's count; block by block with --factor-blocks."""
    import wherefrom.costs.plans as plans
    import wherefrom.curvature.fitting as fitting

    options = FitOptions(batch_size=8, max_length=32, factor_blocks=2)
    model = tiny_llama(layers=2, hidden=16)
    save_model_dir(model, tmp_path / "model")
    decomposed, counted = [], []
    real_eigendecompose_each, real_eigh_seconds = fitting.eigendecompose_each, plans.eigh_seconds

    def recorded(factors, dtype, divisor):  # noqa: ANN001, ANN202
        return real_eigendecompose_each(((decomposed.append(f[2].shape[0]), f)[1] for f in factors), dtype, divisor)

    monkeypatch.setattr(fitting, "eigendecompose_each", recorded)
    monkeypatch.setattr(plans, "eigh_seconds", lambda dims, device: (counted.extend(dims),
                                                                      real_eigh_seconds(dims, device))[1])
    estimate_fit(tmp_path / "model", workspace / "corpus.jsonl", options)
    fit(tmp_path / "model", workspace / "corpus.jsonl", tmp_path / "run", options, quiet=True)
    assert sorted(counted) == sorted(decomposed)
    assert len(decomposed) == 2 * 2 * (2 + 1 + 2)  # blocks × 2 × (gate A and S, up S, down A and S)

"""The linear datamodeling score on synthetic data with a known answer, the subsets it is measured on, and
`wherefrom validate lds` end to end on the reduced demo."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
from exact import sequence_gradient
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.errors import WherefromError
from wherefrom.faithfulness.lds import lds_per_query, linear_datamodeling_score, mean_with_interval, predicted_values
from wherefrom.faithfulness.providers import PROVIDERS
from wherefrom.faithfulness.runner import SWEEP_FACTORS
from wherefrom.faithfulness.subsets import membership, sample_subsets, subset_size
from wherefrom.models.selection import select_layers
from wherefrom.synthetic.config import MAX_LENGTH


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 (the test data have no ties)."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x)] = np.arange(len(x))
    return ranks


def _linear_datamodel(n: int, m: int, q: int, noise: float, seed: int):
    """Per-example effects β [Q, N], subsets of half the corpus, and f = Σ_{n∈S} β_n + Gaussian noise [Q, M]."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=(q, n))
    members = membership(sample_subsets(n, m, 0.5, base_seed=seed), n)
    measured = beta @ members.T + noise * rng.normal(size=(q, m))
    return beta, members, measured


def test_lds_of_a_linear_datamodel_matches_the_gaussian_rank_correlation():
    # f = g + ε with g the sum of the true effects over the subset: for a Gaussian pair with Pearson ρ the
    # Spearman correlation is (6/π) arcsin(ρ/2). A subset of k = pN rows out of N has
    # var(g) = p(1-p) N/(N-1) Σ_n (β_n - β̄)² (sampling without replacement).
    n, m, q = 400, 4000, 6
    beta, members, measured = _linear_datamodel(n, m, q, noise=10.0, seed=3)
    per_query, estimate = linear_datamodeling_score(beta, members, measured)
    p = 0.5
    signal = p * (1 - p) * n / (n - 1) * ((beta - beta.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    rho = np.sqrt(signal / (signal + 10.0 ** 2))
    expected = 6 / np.pi * np.arcsin(rho / 2)
    assert 0.4 < expected.min() and expected.max() < 0.9  # a regime where the test can tell methods apart
    np.testing.assert_allclose(per_query, expected, atol=0.03)
    assert estimate.n == q and estimate.low < estimate.mean < estimate.high


def test_lds_per_query_is_the_pearson_correlation_of_ranks():
    beta, members, measured = _linear_datamodel(60, 50, 4, noise=3.0, seed=1)
    predicted = predicted_values(beta, members)
    np.testing.assert_allclose(predicted[2, 7], sum(beta[2, i] for i in range(60) if members[7, i]))
    expected = [np.corrcoef(_ranks(p), _ranks(f))[0, 1] for p, f in zip(predicted, measured, strict=True)]
    np.testing.assert_allclose(lds_per_query(predicted, measured), expected, rtol=1e-12)


def test_exact_scores_rank_perfectly_and_the_sign_and_scale_behave():
    beta, members, measured = _linear_datamodel(80, 40, 3, noise=0.0, seed=2)
    np.testing.assert_allclose(linear_datamodeling_score(beta, members, measured)[0], 1.0)
    np.testing.assert_allclose(linear_datamodeling_score(7.5 * beta, members, measured)[0], 1.0)
    np.testing.assert_allclose(linear_datamodeling_score(-beta, members, measured)[0], -1.0)


def test_a_query_without_any_spread_is_left_out_of_the_mean():
    predicted = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [1.0, 3.0, 2.0, 4.0]])
    measured = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    per_query = lds_per_query(predicted, measured)
    assert per_query[0] == pytest.approx(1.0) and math.isnan(per_query[1]) and per_query[2] == pytest.approx(-0.8)
    assert mean_with_interval(per_query).n == 2 and mean_with_interval(per_query).mean == pytest.approx(0.1)


def test_the_interval_is_student_t_and_covers_at_its_level():
    values = np.array([0.2, 0.4, 0.1, 0.5, 0.3])
    half = 2.7764451051977987 * values.std(ddof=1) / math.sqrt(5)  # t quantile 0.975 with 4 degrees of freedom
    estimate = mean_with_interval(values)
    assert (estimate.low, estimate.mean, estimate.high) == pytest.approx((0.3 - half, 0.3, 0.3 + half))
    rng = np.random.default_rng(0)
    covered = [(e.low <= 1.0 <= e.high) for e in (mean_with_interval(rng.normal(1.0, 2.0, 10)) for _ in range(4000))]
    assert 0.94 <= np.mean(covered) <= 0.96  # binomial sd of the coverage: 0.0034


def test_subsets_have_the_requested_size_are_stable_and_include_each_row_at_the_fraction():
    subsets = sample_subsets(101, 400, 0.3, base_seed=5)
    assert subset_size(101, 0.3) == 30
    for s in subsets:
        assert len(s.rows) == 30 and len(set(s.rows)) == 30 and list(s.rows) == sorted(s.rows)
        assert 0 <= s.rows[0] and s.rows[-1] < 101
    assert len({s.rows for s in subsets}) == 400
    assert [s.rows for s in sample_subsets(101, 7, 0.3, base_seed=5)] == [s.rows for s in subsets[:7]]
    matrix = membership(subsets, 101)
    assert (matrix.sum(axis=1) == 30).all() and set(np.flatnonzero(matrix[3])) == set(subsets[3].rows)
    inclusion = matrix.mean(axis=0)  # each row: Binomial(400, 30/101) / 400, sd 0.023
    assert np.abs(inclusion - 30 / 101).max() < 0.1 and abs(inclusion.mean() - 30 / 101) < 1e-12


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(WherefromError, match="--fraction"):
        sample_subsets(100, 3, fraction)


def _completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """log p(completion | prompt) one token at a time, from the model's softmax."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(log_probs[len(prompt_ids) - 1 + i, token]) for i, token in enumerate(completion_ids))


def test_validate_lds_on_the_reduced_demo_reuses_its_retrained_models(tmp_path, monkeypatch):
    monkeypatch.setenv("WHEREFROM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "lds"
    args = ["validate", "lds", "--config", "reduced", "--models", "3", "--threads", "1", "--out", str(out)]
    first = CliRunner().invoke(app, [*args, "--damping-sweep", "-q"])
    assert first.exit_code == 0, first.output
    report = json.loads((out / "lds.json").read_text())
    assert [row["method"] for row in report["methods"]] == list(PROVIDERS)
    assert len(report["sweep"]) == len(SWEEP_FACTORS) and all(row["method"] == "ekfac" for row in report["sweep"])
    for row in report["methods"] + report["sweep"]:
        assert len(row["per_query"]) == len(report["protocol"]["queries"])
        assert row["estimate"]["mean"] == pytest.approx(np.nanmean(row["per_query"]))
    identity, ekfac = (np.array(report["methods"][i]["per_query"]) for i in (0, 3))
    assert report["methods"][0]["versus_identity"] is None
    assert report["methods"][3]["versus_identity"]["mean"] == pytest.approx(np.nanmean(ekfac - identity))
    assert (out / "lds.md").read_text().count("\n| ") >= len(PROVIDERS) and (out / "lds.png").stat().st_size > 0

    models = sorted((tmp_path / "cache").glob("lds-*/subset-*"))
    assert len(models) == 3
    demo = next((tmp_path / "cache").glob("demo-*"))
    tokenizer = AutoTokenizer.from_pretrained(demo)
    queries = [json.loads(line) for line in (demo / "queries.jsonl").read_text().splitlines()]
    rows = [json.loads((m / "subset.json").read_text()) for m in models]
    first_model = next(m for m, r in zip(models, rows, strict=True) if r["subset_index"] == 0)
    model = AutoModelForCausalLM.from_pretrained(first_model)
    assert report["measured"][1][0] == pytest.approx(
        _completion_logprob(model, tokenizer, queries[1]["prompt"], queries[1]["completion"]), abs=1e-4)
    # The gradient dot product's LDS from scratch: autograd gradients of the demo model in float64, each subset's
    # predicted value the sum of its members' scores, Spearman (scipy) with the measured log-probabilities.
    base = AutoModelForCausalLM.from_pretrained(demo).double()
    layers = select_layers(base, "mlp")
    documents = [json.loads(line)["text"] for line in (demo / "corpus.jsonl").read_text().splitlines()]
    train = torch.stack([sequence_gradient(base, layers, tokenizer(text)["input_ids"][:MAX_LENGTH])
                         for text in documents])
    query_grads = torch.stack([sequence_gradient(base, layers, prompt + completion, first_target=len(prompt))
                               for prompt, completion in ((tokenizer(q["prompt"])["input_ids"],
                                                           tokenizer(q["completion"], add_special_tokens=False)[
                                                               "input_ids"]) for q in queries)])
    members = membership(sample_subsets(len(documents), 3, 0.5), len(documents))
    predicted = members @ (query_grads @ train.T).numpy().T  # [subsets, queries]
    expected = [scipy.stats.spearmanr(predicted[:, q], np.array(report["measured"])[q]).statistic
                for q in range(len(queries))]
    np.testing.assert_allclose(identity, expected, atol=1e-9)

    stamps = {m: (m / "model.safetensors").stat().st_mtime_ns for m in models}
    second = CliRunner().invoke(app, [*args, "--methods", "identity,ekfac"])
    assert second.exit_code == 0, second.output
    assert "query log-probabilities" in second.output  # the progress bars are captured...
    assert "retraining" not in second.output  # ...and none was needed for retraining
    assert {m: (m / "model.safetensors").stat().st_mtime_ns for m in models} == stamps
    again = json.loads((out / "lds.json").read_text())
    assert [row["method"] for row in again["methods"]] == ["identity", "ekfac"]
    assert again["methods"][1]["per_query"] == report["methods"][3]["per_query"]


def test_an_unknown_method_is_refused_with_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("WHEREFROM_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["validate", "lds", "--config", "reduced", "--methods", "ekfac,magic"])
    assert result.exit_code == 2 and "magic" in result.output and "identity" in result.output

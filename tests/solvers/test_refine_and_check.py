"""`--refine cg`, `--damping auto` and `wherefrom check` against exact float64 computations on tiny models."""

from __future__ import annotations

import re

import pytest
import torch
from exact import damped_influence, gauss_newton, sequence_gradient
from test_ground_truth import UniformSoftmaxRegression, sequences_of, whole_sequence_queries
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.errors import WherefromError
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.scorer import score
from wherefrom.solvers.damping import check_solver_options, damping_curve, parse_damping
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import layer_dampings
from wherefrom.solvers.refine import query_preconditioner
from wherefrom.solvers.sample import as_queries, flat_gradients
from wherefrom.solvers.trust import CONVERGED, ROUGH, TRUSTWORTHY, CheckOptions, trust_check

TOKENIZER = char_tokenizer()
TOKENS = [TOKENIZER(t)["input_ids"][:14] for t in TEXTS[:6]]
QUERIES = [TOKENIZER("paris is the capital")["input_ids"], TOKENIZER("a cat sat")["input_ids"]]


def test_refine_cg_moves_scores_to_the_exact_damped_gauss_newton_influence():
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), FitOptions(batch_size=3), quiet=True)
    damping = Layout.of(layers).expand(layer_dampings(curvature.layers, Layout.of(layers), None), torch.float64)
    grads = [torch.stack([sequence_gradient(model, layers, t) for t in tokens]) for tokens in (QUERIES, TOKENS)]
    expected = damped_influence(gauss_newton(model, layers, TOKENS), *grads, damping)  # full G, every sequence

    def error(**refine: object) -> float:
        options = ScoreOptions(batch_size=3, refine_sample=len(TOKENS), **refine)
        precondition = query_preconditioner(model, layers, curvature, sequences_of(TOKENS), options, quiet=True)
        result = score(model, TOKENIZER, layers, curvature, whole_sequence_queries(QUERIES), sequences_of(TOKENS),
                       options, quiet=True, precondition=precondition)
        return float((result.scores - expected).norm() / expected.norm())

    plain, few, many = error(), error(refine="cg", refine_iterations=3), error(refine="cg", refine_iterations=60)
    assert many < 1e-3 < few < plain, (plain, few, many)  # measured: 1.13, 0.079, 2.8e-4


def test_check_calls_ekfac_trustworthy_where_it_is_exact():
    """Uniform predictions and every label once per input: EK-FAC equals the Gauss-Newton Hessian exactly."""
    model = prepare_for_influence(UniformSoftmaxRegression())
    layers = select_layers(model, "proj")
    tokens = [[x, y] for x in (1, 2, 3) for y in range(7)]
    curvature = fit_curvature(model, layers, sequences_of(tokens), FitOptions(fisher="empirical", batch_size=5),
                              quiet=True)
    b = flat_gradients(model, layers, whole_sequence_queries([[4, 2], [1, 6]]), 2)
    report = trust_check(model, layers, curvature, b, sequences_of(tokens),
                         CheckOptions(iterations=3, sample=len(tokens), batch_size=7), quiet=True)
    assert report.verdict == "trustworthy"
    assert report.overall.cosine > 1 - 1e-10 and report.overall.relative_error < 1e-8


def test_check_command_prints_numbers_and_a_verdict_that_agrees_with_them(tmp_path):
    save_model_dir(tiny_llama(), tmp_path / "model")
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)])
    runner = CliRunner()
    fitted = runner.invoke(app, ["fit", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
                                 "--out", str(tmp_path / "run"), "--max-length", "24", "-q"])
    assert fitted.exit_code == 0, fitted.output
    result = runner.invoke(app, ["check", "--run", str(tmp_path / "run"), "--corpus", str(tmp_path / "corpus.jsonl"),
                                 "--iterations", "12", "--sample", "4", "--n-queries", "2"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "model.layers.1.mlp.down_proj" in result.output
    cosine, _, residual = (float(v) for v in re.search(r"all layers\s*│\s*(\S+)\s*│\s*(\S+)\s*│\s*(\S+)",
                                                       result.output).groups())
    word = re.search(r"verdict: ([a-z ]+) —", result.output).group(1)
    expected = ("inconclusive" if residual > CONVERGED else "trustworthy" if cosine >= TRUSTWORTHY
                else "roughly right" if cosine >= ROUGH else "not trustworthy")
    assert word == expected, result.output


def test_damping_auto_ranks_the_candidates_against_the_reference_solver():
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), FitOptions(batch_size=3), quiet=True)
    curve = damping_curve(model, layers, curvature, as_queries(sequences_of(QUERIES)), sequences_of(TOKENS),
                          ScoreOptions(batch_size=3, refine_iterations=30, refine_sample=len(TOKENS)), quiet=True)
    assert len(curve.candidates) == len(curve.agreement) == 7 and curve.candidates[0] is None
    assert curve.reference_residual < CONVERGED  # the reference is (nearly) the damped Gauss-Newton solution
    assert all(-1 <= a <= 1 for a in curve.agreement) and curve.chosen in curve.candidates
    # The largest damping turns EK-FAC into a scaled gradient dot product, which agrees least with the reference.
    assert curve.agreement[-1] < max(curve.agreement)


@pytest.mark.parametrize(("value", "message"), [("lots", "neither a number nor 'auto'")])
def test_bad_damping_and_refine_values_are_refused(value, message):
    with pytest.raises(WherefromError, match=message):
        parse_damping(value)
    assert parse_damping("auto") == "auto" and parse_damping("0.5") == 0.5 and parse_damping(None) is None
    with pytest.raises(WherefromError, match="--refine-iterations"):
        check_solver_options(ScoreOptions(refine="cg", refine_iterations=0))

"""`--refine cg`, `--damping auto` and `wherefrom check` against exact float64 computations on tiny models."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from exact import damped_influence, gauss_newton, sequence_gradient
from test_ground_truth import UniformSoftmaxRegression, sequences_of, whole_sequence_queries
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.curvature.fitting import FittedCurvature, fit_curvature
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.errors import WherefromError
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.scorer import score
from wherefrom.solvers.damping import check_solver_options, damping_curve, parse_damping
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import layer_dampings
from wherefrom.solvers.reference import Reference, like_with_like
from wherefrom.solvers.refine import query_preconditioner
from wherefrom.solvers.sample import as_queries, flat_gradients
from wherefrom.solvers.trust import ROUGH, CheckOptions, spread_layers, trust_check

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
    reference = like_with_like(model, layers, curvature, FitOptions(fisher="empirical"), sequences_of(tokens),
                               len(tokens), None, True)
    report = trust_check(model, layers, reference, b, CheckOptions(iterations=3, batch_size=7), quiet=True)
    assert report.verdict == "trustworthy" and report.stopped.startswith("settled every layer after 2 iterations")
    assert report.overall.energy_cosine > 1 - 1e-10 and report.overall.cosine > 1 - 1e-10
    assert report.overall.relative_error < 1e-8


def _exact_blocks(model, layers, tokens, damping: float) -> list[torch.Tensor]:
    """Each layer's damped Gauss-Newton block G_ℓℓ + λI, from the explicit float64 matrix (tests/exact.py)."""
    G = gauss_newton(model, layers, tokens)
    blocks, lo = [], 0
    for n in Layout.of(layers).sizes:
        blocks.append(G[lo:lo + n, lo:lo + n] + damping * torch.eye(n, dtype=G.dtype))
        lo += n
    return blocks


def _cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))


def _scaled_identity(layers) -> FittedCurvature:
    """A deliberately poor curvature: G̃ = I for every layer, so EK-FAC's answer is b / (1 + λ)."""
    return FittedCurvature({layer.name: LayerCurvature(None, None, torch.ones(layer.shape.out_features,
                                                                                layer.shape.in_dim,
                                                                                dtype=torch.float64))
                            for layer in layers}, len(TOKENS), 0)


def test_check_numbers_are_those_of_an_exact_dense_solve():
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), FitOptions(batch_size=3), quiet=True)
    damping = 1e-3
    b = flat_gradients(model, layers, whole_sequence_queries(QUERIES), 2)
    reference = like_with_like(model, layers, curvature, FitOptions(), sequences_of(TOKENS), len(TOKENS), damping, True)
    report = trust_check(model, layers, reference, b, CheckOptions(iterations=60, tolerance=1e-9, batch_size=3,
                                                                   layers=0, damping=damping), quiet=True)
    parts = Layout.of(layers).split(b)
    for layer, block, got in zip(layers, _exact_blocks(model, layers, TOKENS, damping), report.layers, strict=True):
        rows = parts[layer.name].flatten(-2)
        exact = torch.linalg.solve(block, rows.T).T
        estimate = curvature.layers[layer.name].solve(parts[layer.name], damping).flatten(-2)
        assert got.name == layer.name
        assert got.cosine == pytest.approx(float(_cosine(estimate, exact).mean()), abs=1e-7)
        assert got.relative_error == pytest.approx(
            float(((estimate - exact).norm(dim=-1) / exact.norm(dim=-1)).mean()), rel=1e-6)
        assert got.residual < 1e-8 and got.solver_error < 1e-9
    assert report.stopped.startswith("settled every layer after") and report.iterations < 60


def _energy_cosine(block: torch.Tensor, estimate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """cos_A(x̃, x) with A = block, dense: x̃ᵀAx / (‖x̃‖_A ‖x‖_A), per row."""
    A_estimate = estimate @ block
    return (A_estimate * exact).sum(-1) / ((A_estimate * estimate).sum(-1) * ((exact @ block) * exact).sum(-1)).sqrt()


def test_check_calls_a_poor_curvature_not_trustworthy_and_an_unconverged_solver_inconclusive():
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    damping = 0.1  # about 2 × the mean diagonal of G: the blocks' condition numbers are 1.3 and 68
    b = flat_gradients(model, layers, whole_sequence_queries(QUERIES), 2)
    blocks, parts = _exact_blocks(model, layers, TOKENS, damping), Layout.of(layers).split(b)
    rows = [parts[layer.name].flatten(-2) for layer in layers]
    # EK-FAC's answer is b / (1 + λ): the direction of b, right for the well-conditioned block only
    exact = [float(_energy_cosine(block, r, torch.linalg.solve(block, r.T).T).mean())
             for block, r in zip(blocks, rows, strict=True)]
    assert exact[0] > 0.99 and exact[1] < ROUGH  # measured: 0.998, 0.672
    reference = Reference(sequences_of(TOKENS), _scaled_identity(layers), {layer.name: damping for layer in layers},
                          refitted=False)
    options = CheckOptions(iterations=60, tolerance=1e-8, batch_size=3, layers=0, damping=damping)
    report = trust_check(model, layers, reference, b, options, quiet=True)
    assert [a.verdict for a in report.layers] == ["trustworthy", "not trustworthy"]
    assert report.verdict == "not trustworthy" and report.layers[1].name in report.explanation
    for got, value in zip(report.layers, exact, strict=True):
        assert value - 1e-9 <= got.energy_cosine < value + 0.01  # an upper bound, tight once settled
    assert report.layers[1].solver_error > options.tolerance  # settled by its bound before converging

    one_step = trust_check(model, layers, reference, b, replace(options, iterations=1), quiet=True)
    assert [a.verdict for a in one_step.layers] == ["inconclusive"] * 2  # after one step the bound is 1
    assert one_step.verdict == "inconclusive" and one_step.stopped == "ran all 1 iterations"
    assert f"{one_step.overall.energy_cosine:.3f}" in one_step.explanation


def test_a_layer_checked_alone_gets_the_numbers_it_gets_among_all():
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=2, hidden=8))
    layers = select_layers(model, "mlp")
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), FitOptions(batch_size=3), quiet=True)
    options = CheckOptions(iterations=3, tolerance=1e-12, batch_size=3)
    chosen = spread_layers(layers, 3)
    assert [layer.name for layer in chosen] == [layers[0].name, layers[2].name, layers[3].name]  # 0, 1.5→2, 3
    reports = []
    for subset in (layers, chosen[1:2]):
        b = flat_gradients(model, subset, whole_sequence_queries(QUERIES), 2)
        reference = like_with_like(model, subset, curvature, FitOptions(), sequences_of(TOKENS), len(TOKENS), None,
                                   True)
        reports.append(trust_check(model, subset, reference, b, options, quiet=True, tracked=len(layers)))
    together, alone = reports[0].layers[2], reports[1].layers[0]
    assert (alone.name, alone.energy_cosine, alone.cosine, alone.relative_error) == pytest.approx(
        (together.name, together.energy_cosine, together.cosine, together.relative_error), rel=1e-9)
    assert reports[1].overall.name == "the 1 checked layers" and reports[0].overall.name == "all layers"


def test_check_command_shows_progress_stops_at_its_budget_and_estimates_its_time(tmp_path):
    save_model_dir(tiny_llama(), tmp_path / "model")
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)])
    runner = CliRunner()
    fitted = runner.invoke(app, ["fit", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
                                 "--out", str(tmp_path / "run"), "--max-length", "24", "-q"])
    assert fitted.exit_code == 0, fitted.output
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    args = ["check", "--run", str(tmp_path / "run"), "--sample", "4", "--n-queries", "2", "--tolerance", "1e-12"]
    estimate = runner.invoke(app, [*args, "--dry-run"], env={"COLUMNS": "250"})
    assert estimate.exit_code == 0, estimate.output
    assert "reference solver (cg)" in estimate.output and "at most 30 iterations" in estimate.output
    assert "3 of 6 layers" in estimate.output and "nothing was written" in estimate.output
    assert "curvature fitted on the sample" in estimate.output  # 4 of the 8 fitted sequences: fitted again
    result = runner.invoke(app, [*args, "--budget", "1e-9"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "CG iteration 1/30" in result.output  # the progress bar names the iteration
    assert "stopped after 1 of 30 iterations: the --budget of 1e-09 s ran out" in result.output
    assert "3 of 6 layers" in result.output and "model.layers.1.mlp.down_proj" in result.output
    assert "curvature refitted on the sample" in result.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    # Without --budget the check may take as long as the fit took, which the run's manifest records.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["fit_seconds"] > 0
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({**manifest, "fit_seconds": 2e-9}))
    defaulted = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert defaulted.exit_code == 0, defaulted.output
    assert "stopped after 1 of 30 iterations: the --budget of 2e-09 s ran out" in defaulted.output


def test_damping_auto_agreements_are_those_of_exact_scores():
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), FitOptions(batch_size=3), quiet=True)
    curve = damping_curve(model, layers, curvature, as_queries(sequences_of(QUERIES)), sequences_of(TOKENS),
                          ScoreOptions(batch_size=3, refine_iterations=60, refine_sample=len(TOKENS)), quiet=True)
    assert len(curve.candidates) == 7 and curve.candidates[0] is None
    # Independently: the reference is the exact full-G influence at the smallest candidate λ; each candidate's
    # scores are EK-FAC's (G̃ + λI)⁻¹ applied to autograd gradients; agreement is the mean Pearson over queries.
    query_grads, train_grads = (torch.stack([sequence_gradient(model, layers, t) for t in tokens])
                                for tokens in (QUERIES, TOKENS))
    G = gauss_newton(model, layers, TOKENS)
    reference = damped_influence(G, query_grads, train_grads, torch.full((G.shape[0],), curve.reference_damping,
                                                                         dtype=torch.float64))
    layout = Layout.of(layers)
    expected = []
    for candidate in curve.candidates:
        parts = layout.split(query_grads)
        V = layout.join({layer.name: curvature.layers[layer.name].solve(parts[layer.name], candidate)
                         for layer in layers})
        scores = V @ train_grads.T
        expected.append(float(torch.stack([torch.corrcoef(torch.stack([s, r]))[0, 1]
                                           for s, r in zip(scores, reference, strict=True)]).mean()))
    assert curve.reference_residual < 0.05  # the reference CG is close to the exact solution...
    assert curve.agreement == pytest.approx(expected, abs=5e-3)  # ...so the agreements are too
    assert curve.chosen == curve.candidates[max(range(7), key=expected.__getitem__)]
    assert sorted(expected)[-1] - sorted(expected)[-2] > 0.01  # the best candidate is not a tie within the tolerance


@pytest.mark.parametrize(("value", "message"), [("lots", "neither a number nor 'auto'")])
def test_bad_damping_and_refine_values_are_refused(value, message):
    with pytest.raises(WherefromError, match=message):
        parse_damping(value)
    assert parse_damping("auto") == "auto" and parse_damping("0.5") == 0.5 and parse_damping(None) is None
    with pytest.raises(WherefromError, match="--refine-iterations"):
        check_solver_options(ScoreOptions(refine="cg", refine_iterations=0))

"""wherefrom on a GPU: fit, score and index on CUDA equal the CPU's results, sampled labels are reproducible there,
bfloat16 agrees with float32, and the stream's memory does not grow with the tracked layers' activity.

Every test here is marked ``cuda`` and skipped without a CUDA device (tests/conftest.py); `pytest -m cuda` runs
them (benchmarks/gpu/ does, on a GPU machine). The float64 ground-truth tests run on CUDA too: they are
parametrised over devices in tests/test_ground_truth.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_ground_truth import QUERY_TOKENS, TOKENIZER, corpus_tokens, sequences_of, whole_sequence_queries
from tiny import TEXTS, save_model_dir, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.api import fit, score
from wherefrom.cli.main import app
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.batching import make_batches
from wherefrom.engine.execution import Execution
from wherefrom.engine.stream import Labels, LayerConsumer, stream
from wherefrom.index import GradientIndex, build_index
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import ExecutionOptions, FitOptions, IndexOptions, ScoreOptions
from wherefrom.solvers.damping import pearson_rows

pytestmark = pytest.mark.cuda
CPU, GPU = ExecutionOptions(device="cpu"), ExecutionOptions(device="cuda", dtype="float32")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same fit (empirical Fisher: no label draws), score and index through the API on the CPU and on CUDA."""
    root = tmp_path_factory.mktemp("cuda")
    save_model_dir(tiny_llama(layers=3, hidden=32), root / "model")
    rows = [{"id": f"d{i}", "text": f"{TEXTS[i % len(TEXTS)]} {TEXTS[(i * 3 + 1) % len(TEXTS)]}"} for i in range(48)]
    write_jsonl(root / "corpus.jsonl", rows)
    write_jsonl(root / "queries.jsonl", [{"prompt": "paris is the capital of", "completion": " france."},
                                         {"prompt": "the cat", "completion": " sat on the mat."}])
    fitted = FitOptions(fisher="empirical", batch_size=8, max_length=48)
    for name, execution in (("cpu", CPU), ("cuda", GPU)):
        fit(root / "model", root / "corpus.jsonl", root / f"run-{name}", fitted, quiet=True, execution=execution)
        score(root / f"run-{name}", root / "queries.jsonl", out=root / f"out-{name}", quiet=True, execution=execution,
              options=ScoreOptions(batch_size=8, max_length=48, per_layer=True, per_token=True, self_influence=True))
        build_index(root / f"run-{name}", root / f"index-{name}", quiet=True, execution_options=execution,
                    options=IndexOptions(batch_size=8, max_length=48, compression="entries"))
        build_index(root / f"run-{name}", root / f"sketch-{name}", quiet=True, execution_options=execution,
                    options=IndexOptions(batch_size=8, max_length=48, budget="8KB"))
    return root


def recorded_device(folder: Path) -> str:
    """The device a run, score or index folder's manifest says its passes ran on."""
    return json.loads((folder / "manifest.json").read_text())["execution"]["device"]


def on_cuda(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` moved to CUDA, checked to be executed there (a silent fallback to the CPU would pass the rest)."""
    model = model.to("cuda")
    assert Execution.of(model).device.type == "cuda"
    return model


def test_every_cuda_run_recorded_that_it_ran_on_cuda(runs):
    """Equal results prove nothing if the "CUDA" runs ran on the CPU: each folder says where it ran."""
    for kind in ("run", "out", "index", "sketch"):
        assert recorded_device(runs / f"{kind}-cpu") == "cpu", kind
        assert recorded_device(runs / f"{kind}-cuda") == "cuda:0", kind


def test_fit_on_cuda_equals_the_cpu_fit(runs):
    cpu, gpu = (load_file(str(runs / f"run-{name}" / "factors.safetensors")) for name in ("cpu", "cuda"))
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        if key.endswith("eigenvalues"):
            torch.testing.assert_close(gpu[key], cpu[key], rtol=1e-4, atol=1e-6 * float(cpu[key].abs().max()))


def test_scores_on_cuda_equal_the_cpu_scores(runs):
    cpu, gpu = (load_file(str(runs / f"out-{name}" / "scores.safetensors")) for name in ("cpu", "cuda"))
    for key in ("scores", "per_layer", "per_token", "self_influence"):
        torch.testing.assert_close(gpu[key], cpu[key], rtol=1e-3, atol=1e-4 * float(cpu[key].abs().max()))


def test_index_on_cuda_equals_the_cpu_index(runs):
    cpu, gpu = (np.load(runs / f"index-{name}" / "gradients.npy").astype(np.float32) for name in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu, cpu, atol=2e-3)  # float16 rows scaled to a largest magnitude of 1
    cpu, gpu = (np.unpackbits(np.load(runs / f"sketch-{name}" / "gradients.npy"), axis=1) for name in ("cpu", "cuda"))
    assert (cpu != gpu).mean() < 1e-3  # only buckets within rounding of zero may take the other sign
    cpu, gpu = (np.load(runs / f"sketch-{name}" / "scales.npy") for name in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)


def test_sampled_labels_on_cuda_are_reproducible():
    model = on_cuda(prepare_for_influence(tiny_llama(dtype=torch.float64)))
    layers = select_layers(model, "mlp")
    sequences = sequences_of(corpus_tokens())
    fits = [fit_curvature(model, layers, sequences, FitOptions(seed=seed, batch_size=3), quiet=True)
            for seed in (7, 7, 8)]
    for name in fits[0].layers:
        torch.testing.assert_close(fits[1].layers[name].eigenvalues, fits[0].layers[name].eigenvalues)
    assert any(not torch.equal(fits[2].layers[n].eigenvalues, fits[0].layers[n].eigenvalues) for n in fits[0].layers)


def test_bfloat16_on_cuda_correlates_with_float32():
    from test_precision import BF16_ONE_MINUS_PEARSON, models_in

    tokens = corpus_tokens(8)
    scores = []
    for model in models_in(torch.float32, torch.bfloat16):
        model = on_cuda(model)
        layers = select_layers(model, "mlp")
        curvature = fit_curvature(model, layers, sequences_of(tokens * 4), FitOptions(batch_size=8), quiet=True)
        scores.append(score_sequences(model, layers, curvature, tokens))
    assert (1 - pearson_rows(scores[1], scores[0])).max() <= BF16_ONE_MINUS_PEARSON


def score_sequences(model: torch.nn.Module, layers: list, curvature: object, tokens: list[list[int]]) -> torch.Tensor:
    from wherefrom.scoring.scorer import score as score_in_memory

    return score_in_memory(model, TOKENIZER, layers, curvature, whole_sequence_queries(QUERY_TOKENS), sequences_of(tokens),
                           ScoreOptions(batch_size=4), quiet=True).scores


def _peak_pass_bytes(model: torch.nn.Module, tracked_blocks: int, consumer: str) -> tuple[int, int]:
    """Peak CUDA memory of one batch above what was allocated before it, and one block's ā + Ds bytes."""
    layers = select_layers(model, rf"layers\.({'|'.join(map(str, range(tracked_blocks)))})\.mlp\.")
    execution = Execution.of(model)
    tokens = torch.randint(3, 30, (8, 64), generator=torch.Generator().manual_seed(0)).tolist()
    batch = list(make_batches(tokens, [1] * 8, 8, device="cuda"))
    accumulator = CovarianceAccumulator(layers, execution) if consumer == "covariance" else LayerConsumer()

    def run() -> None:
        for _ in stream(model, layers, batch, 1, Labels("data"), accumulator, "", quiet=True):
            pass

    run()  # scratch buffers and cuBLAS workspaces exist before measuring
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    hidden, inner = model.config.hidden_size, model.config.intermediate_size
    per_block = 8 * 64 * (2 * hidden + 3 * inner) * 4  # ā (shared gate/up input, down input) + Ds of 3 layers
    return torch.cuda.max_memory_allocated() - before, per_block


def test_the_streams_memory_does_not_grow_with_the_tracked_layers_activity():
    """Tracking 8 blocks instead of 1 adds far less than the 7 more blocks' ā and Ds: the covariance pass holds
    none of them (ā consumed in the forward pass, Ds as the backward pass reaches it), a paired consumer only the
    ā of the layers the backward pass has not reached yet (never their Ds)."""
    torch.manual_seed(0)
    model = on_cuda(prepare_for_influence(tiny_llama(layers=8, hidden=128)))
    for consumer, share in (("covariance", 0.25), ("paired", 0.5)):
        one, per_block = _peak_pass_bytes(model, 1, consumer)
        eight, _ = _peak_pass_bytes(model, 8, consumer)
        assert (eight - one) / 7 < share * per_block, (consumer, one, eight, per_block)


def test_check_dry_run_on_cuda_times_the_product_there(tmp_path):
    save_model_dir(tiny_llama(), tmp_path / "model")
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS)])
    fit(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "run", FitOptions(batch_size=4), quiet=True,
        execution=CPU)
    result = CliRunner().invoke(app, ["check", "--run", str(tmp_path / "run"), "--sample", "2", "--n-queries", "1",
                                      "--device", "cuda", "--dry-run"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "execution: device cuda:0, dtype float32\n" in result.output


def test_the_index_answers_on_cuda_accumulating_in_float32(runs):
    index = GradientIndex.open(runs / "index-cpu")
    queries = torch.randn(3, index.gradients.shape[1], generator=torch.Generator().manual_seed(0))
    rows = torch.from_numpy(np.asarray(index.gradients, dtype=np.float64)) * torch.from_numpy(index.scales)[:, None]
    expected = queries.double() @ rows.T  # float64 from the stored rows
    on_gpu, on_host = index.to("cuda").contract(queries)[0], index.contract(queries)[0]
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float32
    largest = float(expected.abs().max())
    torch.testing.assert_close(on_gpu.double(), expected, rtol=0, atol=1e-5 * largest)  # float32 accumulation
    torch.testing.assert_close(on_host.double(), expected, rtol=0, atol=2e-3 * largest)  # float16 products
    # score --index --rescore 0 on CUDA (query side and contraction there) equals the CPU's
    for name, execution in (("cpu", CPU), ("cuda", GPU)):
        score(runs / "run-cpu", runs / "queries.jsonl", out=runs / f"index-scores-{name}", index=runs / "index-cpu",
              options=ScoreOptions(rescore=0, batch_size=8, max_length=48, per_layer=True), quiet=True,
              execution=execution)
    assert [recorded_device(runs / f"index-scores-{name}") for name in ("cpu", "cuda")] == ["cpu", "cuda:0"]
    assert index.to("cuda").device.type == "cuda"
    cpu, gpu = (load_file(str(runs / f"index-scores-{name}" / "scores.safetensors")) for name in ("cpu", "cuda"))
    for key in ("scores", "per_layer"):
        torch.testing.assert_close(gpu[key], cpu[key], rtol=0, atol=3e-3 * float(cpu[key].abs().max()))


def test_the_sketch_answers_on_cuda_like_float64_from_its_bits(runs):
    index = GradientIndex.open(runs / "sketch-cpu")
    assert index.manifest["compression"] == "sketch"
    queries = torch.randn(3, index.values, generator=torch.Generator().manual_seed(0))
    signs = torch.from_numpy(np.unpackbits(index.gradients, axis=1)).double() * 2 - 1
    expected = queries.double() @ (signs * torch.from_numpy(index.scales).double()[:, None]).T
    on_gpu, on_host = index.to("cuda").contract(queries)[0], index.contract(queries)[0]
    largest = float(expected.abs().max())
    torch.testing.assert_close(on_gpu.double(), expected, rtol=0, atol=1e-5 * largest)  # bits unpacked there, float32
    torch.testing.assert_close(on_host.double(), expected, rtol=0, atol=5e-3 * largest)  # the host's int8 kernel


def test_factor_sums_on_the_host_stay_there_while_the_model_runs_on_cuda(runs, tmp_path, monkeypatch):
    """--factors host on a GPU: during both passes every sum the accumulators fill is in host memory while the
    layers' ā and Ds are on CUDA, the manifest records it, and the factors equal the on-device fit's."""
    import wherefrom.curvature.fitting as fitting
    from wherefrom.curvature.correction import CorrectionAccumulator

    seen: list[tuple[str, set[str], str]] = []

    def watched(base: type) -> type:
        class Watched(base):
            def layer(self, name, layer):  # noqa: ANN001, ANN202 - records placement while the pass runs
                seen.append((base.__name__, {t.device.type for t in self.sums.values()}, layer.output_grads.device.type))
                super().layer(name, layer)
        return Watched

    monkeypatch.setattr(fitting, "CovarianceAccumulator", watched(CovarianceAccumulator))
    monkeypatch.setattr(fitting, "CorrectionAccumulator", watched(CorrectionAccumulator))
    host = ExecutionOptions(device="cuda", dtype="float32", factors="host")
    fit(runs / "model", runs / "corpus.jsonl", tmp_path / "run", FitOptions(fisher="empirical", batch_size=8,
                                                                            max_length=48), quiet=True, execution=host)
    assert {kind for kind, _, _ in seen} == {"CovarianceAccumulator", "CorrectionAccumulator"}
    assert all(sums == {"cpu"} and grads == "cuda" for _, sums, grads in seen), seen[:3]
    execution = json.loads((tmp_path / "run" / "manifest.json").read_text())["execution"]
    assert execution["device"] == "cuda:0" and execution["factors"] == "host"
    on_host, on_device = (load_file(str(folder / "factors.safetensors")) for folder in (tmp_path / "run",
                                                                                         runs / "run-cuda"))
    assert on_host.keys() == on_device.keys()
    for name, tensor in on_device.items():
        if name.endswith("eigenvalues"):  # the bases' signs are arbitrary
            torch.testing.assert_close(on_host[name], tensor, rtol=1e-4, atol=1e-6 * float(tensor.abs().max()))

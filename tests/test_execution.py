"""The execution object: options checked in one place, factor sums kept on the host, one layer's activity held at
a time, and the device and dtype recorded and shown."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
import torch.nn.functional as F
from test_ground_truth import QUERY_TOKENS, TOKENIZER, corpus_tokens, sequences_of, whole_sequence_queries
from tiny import TEXTS, save_model_dir, tiny_llama, write_jsonl
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.curvature.correction import CorrectionAccumulator
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.batching import make_batches
from wherefrom.engine.execution import Execution, check_execution_options, resolve_device, resolve_dtype
from wherefrom.engine.stream import Labels, LayerBatch, LayerConsumer, stream, token_summed_nll
from wherefrom.errors import WherefromError
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import ExecutionOptions, FitOptions, ScoreOptions
from wherefrom.scoring.scorer import score


@pytest.mark.parametrize(("field", "value"), [("device", "gpu"), ("device", "cuda:x"), ("dtype", "fp8"),
                                              ("factors", "disk")])
def test_execution_options_refuse_unknown_values(field, value):
    with pytest.raises(WherefromError, match=f"--{field} {value!r} is not one of"):
        check_execution_options(ExecutionOptions(**{field: value}))


def test_auto_picks_cuda_when_present_and_float32_on_the_cpu():
    cuda = torch.cuda.is_available()
    assert resolve_device("auto").type == ("cuda" if cuda else "cpu")
    assert resolve_dtype("auto", torch.device("cpu"), torch.bfloat16) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda", 0), torch.bfloat16) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu"), torch.bfloat16, fitted="bfloat16") == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu"), None) == torch.float16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_asking_for_cuda_without_it_says_so_in_one_line():
    with pytest.raises(WherefromError, match="no usable CUDA device.*use --device cpu"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("strategy", ["ekfac", "kfac", "diagonal"])
def test_factor_sums_in_host_memory_give_the_same_curvature(strategy):
    """The host-offload path (each batch's block formed apart, then added to the host's sum) against the default."""
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    sequences = sequences_of(corpus_tokens())
    options = FitOptions(strategy=strategy, batch_size=3, fisher="empirical", factor_blocks=2 if strategy == "kfac" else 1)
    on_device = fit_curvature(model, layers, sequences, options, quiet=True)
    on_host = fit_curvature(model, layers, sequences, options, quiet=True,
                            execution=Execution(torch.device("cpu"), torch.float64, factors_on_host=True))
    for name, expected in on_device.layers.items():
        torch.testing.assert_close(on_host.layers[name].eigenvalues, expected.eigenvalues, rtol=1e-10, atol=1e-14)
    queries = whole_sequence_queries(QUERY_TOKENS)
    a, b = (score(model, TOKENIZER, layers, fitted, queries, sequences, ScoreOptions(batch_size=4), quiet=True)
            for fitted in (on_device, on_host))
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-8, atol=1e-12)


class _Watcher(LayerConsumer):
    """Keeps weak references to every ā the stream hands over and counts, at each hand-over, how many earlier ones
    (other than the one handed over now, which sibling layers share) are still alive."""

    def __init__(self, inputs_in_forward: bool) -> None:
        self.inputs_in_forward = inputs_in_forward
        self.received: list[weakref.ref] = []
        self.alive: list[int] = []
        self.handed_over = 0

    def inputs(self, name: str, inputs: torch.Tensor) -> None:
        self._receive(inputs)

    def layer(self, name: str, layer: LayerBatch) -> None:
        self.handed_over += 1
        if layer.inputs is not None:
            self._receive(layer.inputs)

    def _receive(self, a: torch.Tensor) -> None:
        self.alive.append(sum(ref() is not None and ref() is not a for ref in self.received))
        self.received.append(weakref.ref(a))


@pytest.mark.parametrize("inputs_in_forward", [False, True], ids=["paired", "inputs-in-forward"])
def test_the_stream_releases_each_layers_inputs_once_handed_over(inputs_in_forward):
    """ā of a layer is released as soon as the layer (and a sibling reading the same input) has been handed over:
    during the backward pass for a paired consumer, during the forward pass for one that takes ā there."""
    model = prepare_for_influence(tiny_llama(layers=4))
    layers = select_layers(model, "mlp")  # 12 layers; gate_proj and up_proj share one ā
    watcher = _Watcher(inputs_in_forward)
    tokens = corpus_tokens(4)
    for _ in stream(model, layers, make_batches(tokens, [1] * 4, 4), 1, Labels("data"), watcher, "", quiet=True):
        pass
    assert watcher.handed_over == len(layers) and len(watcher.received) == len(layers)
    assert max(watcher.alive) == 0, watcher.alive


def test_the_streams_loss_and_its_gradient_are_cross_entropys_over_the_target_tokens():
    """The pass's loss (per row, over positions whose next token is a target) and its gradient with respect to the
    logits, against F.cross_entropy's in float64; positions outside the targets get no gradient."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 7, 50, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7), generator=generator)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :3], mask[2, 5:] = 0, 0
    weights = torch.randn(3, dtype=torch.float64, generator=generator)
    loss = token_summed_nll(logits, targets, mask)
    (gradient,) = torch.autograd.grad((loss * weights).sum(), logits)
    shifted = targets[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 50), shifted.reshape(-1), reduction="none").view(3, 6).sum(1)
    (expected_gradient,) = torch.autograd.grad((expected * weights).sum(), logits)
    assert torch.allclose(loss, expected, rtol=1e-13, atol=1e-13)
    assert torch.allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-14)
    assert gradient[:, -1].abs().max() == 0 and gradient[0, :2].abs().max() == 0 and gradient[2, 4:].abs().max() == 0
    assert torch.autograd.gradcheck(lambda x: token_summed_nll(x, targets, mask), (logits,))
    half = token_summed_nll(logits.detach().bfloat16(), targets, mask)  # the loss of half-precision logits is float32
    assert half.dtype == torch.float32 and torch.allclose(half.double(), expected, rtol=2e-2)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("execution")
    save_model_dir(tiny_llama(), root / "model")
    write_jsonl(root / "corpus.jsonl", [{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS)])
    write_jsonl(root / "queries.jsonl", [{"prompt": "paris is the capital of", "completion": " france."}])
    return root


def test_fit_in_bfloat16_records_the_execution_and_writes_float32_factors(workspace, tmp_path):
    from safetensors import safe_open

    runner = CliRunner()
    common = ["--model", workspace / "model", "--corpus", workspace / "corpus.jsonl", "--out", tmp_path / "run",
              "--device", "cpu", "--dtype", "bfloat16", "--batch-size", "4", "-q"]
    dry = runner.invoke(app, ["fit", *map(str, common), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "execution: device cpu, dtype bfloat16, factor sums on the device" in dry.output
    fitted = runner.invoke(app, ["fit", *map(str, common)])
    assert fitted.exit_code == 0, fitted.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["execution"] == {"device": "cpu", "dtype": "bfloat16", "factors": "device", "processes": 1}
    with safe_open(str(tmp_path / "run" / "factors.safetensors"), framework="pt") as f:
        assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"F32"}
    # score takes the run's dtype by default and records it
    scored = runner.invoke(app, ["score", "--run", str(tmp_path / "run"), "--queries", str(workspace / "queries.jsonl"),
                                 "--out", str(tmp_path / "out"), "-q"])
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["execution"]["dtype"] == "bfloat16"
    # the float32 checkpoint rounded to bf16 is another model in float32: refused, naming the dtype to give
    other = runner.invoke(app, ["score", "--run", str(tmp_path / "run"), "--queries", str(workspace / "queries.jsonl"),
                                "--out", str(tmp_path / "out32"), "--dtype", "float32", "-q"])
    assert other.exit_code == 2 and "fitted in bfloat16" in other.output and "give --dtype bfloat16" in other.output


def test_a_bad_device_is_one_line_through_the_cli(workspace, tmp_path):
    result = CliRunner().invoke(app, ["fit", "--model", str(workspace / "model"), "--corpus",
                                      str(workspace / "corpus.jsonl"), "--out", str(tmp_path / "run"),
                                      "--device", "tpu"])
    assert result.exit_code == 2
    assert "--device 'tpu' is not one of: auto, cpu, cuda, cuda:N" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_check_dry_run_plans_the_execution_the_check_would_use(workspace, tmp_path):
    runner = CliRunner()
    fitted = runner.invoke(app, ["fit", "--model", str(workspace / "model"), "--corpus", str(workspace / "corpus.jsonl"),
                                 "--out", str(tmp_path / "run"), "--dtype", "bfloat16", "--batch-size", "4", "-q"])
    assert fitted.exit_code == 0, fitted.output
    args = ["check", "--run", str(tmp_path / "run"), "--sample", "2", "--n-queries", "1", "--layers", "1", "--dry-run"]
    planned = runner.invoke(app, [*args, "--device", "cpu"], env={"COLUMNS": "250"})
    assert planned.exit_code == 0, planned.output
    assert "execution: device cpu, dtype bfloat16\n" in planned.output  # the run's dtype; the check keeps no sums
    assert "reference solver (cg)" in planned.output
    # The dtype and device are the check's own: refused as the check itself refuses them, in one line.
    other = runner.invoke(app, [*args, "--dtype", "float32"])
    assert other.exit_code == 2 and "fitted in bfloat16" in other.output and "Traceback" not in other.output
    missing = runner.invoke(app, [*args, "--device", "cuda:99"])
    assert missing.exit_code == 2 and "--device cuda:99:" in missing.output and "Traceback" not in missing.output


def test_factor_sums_asked_for_on_the_host_are_allocated_there_when_the_model_is_elsewhere():
    """Host and device differ here (the model's device is 'meta', which holds no data), as they do on a GPU: the
    accumulators' sums must be on the CPU with --factors host and on the model's device without it; the bases the
    correction pass rotates with stay on the model's device."""
    layers = select_layers(prepare_for_influence(tiny_llama()), "mlp")
    shapes = {layer.name: (layer.shape.out_features, layer.shape.in_dim) for layer in layers}
    bases = {layer.name: (torch.eye(layer.shape.in_dim), torch.eye(layer.shape.out_features)) for layer in layers}
    meta = torch.device("meta")
    for on_host, where in ((True, "cpu"), (False, "meta")):
        execution = Execution(meta, torch.float32, factors_on_host=on_host)
        assert execution.factor_device.type == where
        covariance = CovarianceAccumulator(layers, execution, blocks=2)
        correction = CorrectionAccumulator(bases, shapes, execution)
        for accumulator in (covariance, correction):
            assert accumulator.on_host is on_host
            assert {tensor.device.type for tensor in accumulator.sums.values()} == {where}, (type(accumulator), where)
        assert {q.device.type for qs in correction.bases.values() for q in qs} == {"meta"}


def test_fit_with_factors_on_the_host_records_it_and_its_dry_run_plans_it(workspace, tmp_path):
    """--factors host reaches the execution the fit runs with (recorded in the manifest), the dry run says so, and
    the sums the passes fill are on the host during the pass."""
    import wherefrom.curvature.fitting as fitting

    seen: list[tuple[bool, set[str]]] = []
    original = fitting.CovarianceAccumulator

    class Watched(original):
        def layer(self, name, layer):  # noqa: ANN001, ANN202 - records where the sums are while the pass runs
            seen.append((self.on_host, {tensor.device.type for tensor in self.sums.values()}))
            super().layer(name, layer)

    runner = CliRunner()
    common = ["--model", workspace / "model", "--corpus", workspace / "corpus.jsonl", "--out", tmp_path / "run",
              "--device", "cpu", "--factors", "host", "--batch-size", "4"]
    dry = runner.invoke(app, ["fit", *map(str, common), "--dry-run"], env={"COLUMNS": "250"})
    assert dry.exit_code == 0, dry.output
    assert "device cpu, dtype float32, factor sums in host memory" in " ".join(dry.output.split()), dry.output
    fitting.CovarianceAccumulator = Watched
    try:
        done = runner.invoke(app, ["fit", *map(str, common), "-q"])
    finally:
        fitting.CovarianceAccumulator = original
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["execution"]["factors"] == "host"
    assert seen and all(on_host and devices == {"cpu"} for on_host, devices in seen)

"""`open_run`: the one way score, index, check, the explorer and the dry runs open a fitted run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import TEXTS, char_tokenizer, save_model_dir, tiny_gpt2, write_jsonl

from wherefrom.api import fit
from wherefrom.curvature.opening import open_run
from wherefrom.errors import WherefromError
from wherefrom.models.loading import load_model
from wherefrom.options import ExecutionOptions, FitOptions


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("open_run")
    model_dir = save_model_dir(tiny_gpt2(layers=1), root / "model")
    corpus = write_jsonl(root / "corpus.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS)])
    fit(model_dir, corpus, root / "run", FitOptions(max_length=12, batch_size=3, shard_size=5, modules="mlp"),
        quiet=True)
    return model_dir, corpus, root / "run"


def test_opens_the_model_the_run_names_with_its_layers_and_data_options(fitted: tuple[Path, Path, Path]):
    model_dir, corpus, run = fitted
    opened = open_run(run, execution=ExecutionOptions(device="cpu"))
    assert opened.loaded.source == str(model_dir)
    assert next(opened.loaded.model.parameters()).device == torch.device("cpu")
    assert [layer.name for layer in opened.layers] == ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    assert list(opened.curvature.layers) == [layer.name for layer in opened.layers]
    assert opened.data == {"max_length": 12, "pack": False, "batch_size": 3, "shard_size": 5}
    tokenizer = char_tokenizer()
    expected = [tuple(tokenizer(text)["input_ids"][:12]) for text in TEXTS]
    assert [s.input_ids for s in opened.sequences(None, 12, False)] == expected  # the fitted corpus by default
    assert [s.record_id for s in opened.sequences(corpus, 4, False)] == [f"r{i}" for i in range(len(TEXTS))]


def test_refuses_a_model_the_run_was_not_fitted_for(fitted: tuple[Path, Path, Path], tmp_path: Path):
    _, _, run = fitted
    other = save_model_dir(tiny_gpt2(seed=1, layers=1), tmp_path / "other")
    with pytest.raises(WherefromError, match="fitted for model .* not for the model given now"):
        open_run(run, model=other)
    with pytest.raises(WherefromError, match="fitted for model"):
        open_run(run, model=load_model(other))


def test_the_model_fingerprint_is_the_hash_runs_were_saved_with():
    """The fingerprint that every saved run records: the config and each parameter's name, shape and float64 sum
    and sum of squares over chunks of 2^20 values, formed here the plain way (runs fitted by earlier versions
    must still open), and it changes with one weight."""
    import hashlib
    import json

    from wherefrom.models.loading import model_fingerprint

    model = tiny_gpt2()
    with torch.no_grad():
        model.transformer.wte.weight.copy_(torch.randn(model.transformer.wte.weight.shape) * 0.02)
    h = hashlib.sha256()
    settings = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        chunks = [c.double() for c in p.detach().reshape(-1).split(1 << 20)]
        total = sum(float(c.sum()) for c in chunks)
        squares = sum(float(c.square().sum()) for c in chunks)
        h.update(f"{name}{tuple(p.shape)}{total:.12e}{squares:.12e}".encode())
    assert model_fingerprint(model) == h.hexdigest()[:16]
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] += 1e-3
    assert model_fingerprint(model) != h.hexdigest()[:16]

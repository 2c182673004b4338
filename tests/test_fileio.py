"""Tensors saved by wherefrom's own safetensors writer are read back by safetensors itself, exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from wherefrom.fileio import save_tensors


def test_saved_tensors_are_read_back_by_safetensors_exactly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "factors/Q_A": torch.randn(5, 3, generator=generator),
        "a double": torch.randn(4, dtype=torch.float64, generator=generator),
        "half": torch.randn(2, 3, generator=generator).half(),
        "brain": torch.randn(3, generator=generator).bfloat16(),
        "rows": torch.arange(7),
        "small ints": torch.arange(-3, 3, dtype=torch.int8),
        "bits": torch.tensor([0, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "transposed": torch.randn(3, 4, generator=generator).T,  # not contiguous
    }
    path = tmp_path / "t.safetensors"
    save_tensors(path, tensors)
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == sorted(tensors)
    assert not list(tmp_path.glob("*.partial"))


def test_a_tensor_that_cannot_be_saved_leaves_no_file(tmp_path):
    path = tmp_path / "t.safetensors"
    with pytest.raises(KeyError):
        save_tensors(path, {"complex": torch.zeros(2, dtype=torch.complex64)})
    assert not list(tmp_path.iterdir())

"""The index's stored self-influence and its normalised scores (--normalize) against exact scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_llama, write_workspace

from wherefrom.api import fit, score
from wherefrom.errors import WherefromError
from wherefrom.index import build_index
from wherefrom.options import FitOptions, IndexOptions, ScoreOptions


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("index-cosine")
    write_workspace(root, tiny_llama(dtype=torch.float64))
    fit(root / "model", root / "corpus.jsonl", root / "run", FitOptions(batch_size=3, max_length=32), quiet=True)
    build_index(root / "run", root / "index", options=IndexOptions(batch_size=3, max_length=32, budget="full"),
                quiet=True)
    build_index(root / "run", root / "small", options=IndexOptions(batch_size=3, max_length=32, budget="512"),
                quiet=True)
    return root


def test_the_index_stores_exact_self_influence_whatever_its_size(workspace):
    exact = score(workspace / "run", workspace / "queries.jsonl", quiet=True,
                  options=ScoreOptions(max_length=32, batch_size=3, self_influence=True)).self_influence
    for name in ("index", "small"):  # the norm is the full gradient's, not the kept entries'
        stored = torch.from_numpy(np.load(workspace / name / "self_influence.npy")).double()
        torch.testing.assert_close(stored, exact.double(), rtol=1e-5, atol=0)


def test_normalised_index_scores_and_rescoring_agree_with_exact_normalised_scoring(workspace):
    def run(index=None, **extra):
        return score(workspace / "run", workspace / "queries.jsonl", index=index, quiet=True,
                     options=ScoreOptions(max_length=32, batch_size=3, normalize=True, **extra))

    exact = run()
    from_index = run(workspace / "index", rescore=0)
    assert from_index.ranked_by == "cosine"
    torch.testing.assert_close(from_index.cosine.double(), exact.cosine.double(), rtol=0, atol=2e-3)
    rescored = run(workspace / "small", rescore=3)
    rows = [s.row for s in rescored.sequences]
    torch.testing.assert_close(rescored.cosine, exact.cosine[:, rows])  # candidates normalised exactly
    with pytest.raises(WherefromError, match="drop --rescore 0"):
        run(workspace / "index", damping=0.01, rescore=0)  # stored norms are at the default damping

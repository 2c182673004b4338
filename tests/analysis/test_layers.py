"""Layer blocks, restricted scores and the centre-of-mass heatmap against hand-computed values."""

import numpy as np
import pytest
import torch

from wherefrom.analysis.layers import (
    block_scores,
    centre_of_mass,
    layer_blocks,
    layer_heatmap,
    restricted_scores,
    thirds,
    transformer_layer,
)

# Five transformer layers with two tracked MLP modules each, listed module-major (all up_proj, then all down_proj).
NAMES = [f"model.layers.{i}.mlp.up_proj" for i in range(5)] + [f"model.layers.{i}.mlp.down_proj" for i in range(5)]


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("model.layers.12.mlp.up_proj", 12),
        ("transformer.h.3.mlp.c_fc", 3),
        ("gpt_neox.layers.0.mlp.dense_h_to_4h", 0),
        ("base_model.model.model.layers.7.mlp.experts.2.w1", 7),
        ("h.10", 10),
    ],
)
def test_transformer_layer_from_name(name, index):
    assert transformer_layer(name) == index


def test_name_without_layer_index_is_a_clear_error():
    with pytest.raises(ValueError, match="'lm_head'"):
        transformer_layer("lm_head")


def test_blocks_are_contiguous_transformer_layers():
    blocks = layer_blocks(NAMES, 3)
    assert [(b.first_layer, b.last_layer) for b in blocks] == [(0, 1), (2, 3), (4, 4)]
    assert [b.members for b in blocks] == [(0, 1, 5, 6), (2, 3, 7, 8), (4, 9)]
    assert [b.name for b in blocks] == ["layers 0-1", "layers 2-3", "layers 4-4"]
    assert [b.members for b in layer_blocks(NAMES, 5)] == [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9)]
    with pytest.raises(ValueError, match="5 transformer layers into 6 blocks"):
        layer_blocks(NAMES, 6)


def test_thirds_are_named():
    named = thirds(NAMES)
    assert list(named) == ["lower", "middle", "upper"]
    assert named["upper"].members == (4, 9)
    assert named["middle"].name == "middle"


def test_restricted_and_block_scores_sum_per_layer_terms():
    per_layer = np.arange(10 * 2 * 3, dtype=np.float64).reshape(10, 2, 3)
    lower = thirds(NAMES)["lower"]
    expected = per_layer[0] + per_layer[1] + per_layer[5] + per_layer[6]
    np.testing.assert_allclose(restricted_scores(torch.tensor(per_layer), lower), expected)
    stacked = block_scores(per_layer, layer_blocks(NAMES, 3))
    assert stacked.shape == (3, 2, 3)
    np.testing.assert_allclose(stacked.sum(axis=0), per_layer.sum(axis=0))
    with pytest.raises(ValueError, match="per_layer has 4 layers"):
        restricted_scores(per_layer[:4], lower)


def test_centre_of_mass_by_hand():
    matrix = np.array([[1.0, 0.0, -2.0, 0.0], [0.0, 2.0, 0.0, 0.0], [3.0, 0.0, 2.0, 0.0]])
    centres = centre_of_mass(matrix)
    np.testing.assert_allclose(centres[:3], [6.0 / 4.0, 1.0, 1.0])
    assert np.isnan(centres[3])


def test_heatmap_orders_top_sequences_by_centre_of_mass():
    # Three transformer layers, one module each, one block per layer; query 1 is the one shown.
    names = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc", "transformer.h.2.mlp.c_fc"]
    per_layer = np.zeros((3, 2, 5))
    per_layer[:, 1, 0] = [0.0, 0.0, 4.0]  # centre 2
    per_layer[:, 1, 2] = [3.0, 1.0, 0.0]  # centre 0.25
    per_layer[:, 1, 3] = [1.0, 0.0, 1.0]  # centre 1
    per_layer[:, 0, :] = 100.0  # another query: must not leak in
    heatmap = layer_heatmap(torch.tensor(per_layer), layer_blocks(names, 3), query=1, rows=[0, 2, 3])
    np.testing.assert_array_equal(heatmap.rows, [2, 3, 0])
    np.testing.assert_allclose(heatmap.centre_of_mass, [0.25, 1.0, 2.0])
    np.testing.assert_allclose(heatmap.matrix, [[3.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 4.0]])
    two_blocks = layer_heatmap(per_layer, layer_blocks(names, 2), query=1, rows=[0, 2, 3])
    # blocks {0, 1} and {2}: row 0 -> [0, 4] (centre 1), row 2 -> [4, 0] (0), row 3 -> [1, 1] (0.5)
    np.testing.assert_array_equal(two_blocks.rows, [2, 3, 0])
    np.testing.assert_allclose(two_blocks.centre_of_mass, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        layer_heatmap(per_layer, layer_blocks(names, 3), query=1, rows=[])

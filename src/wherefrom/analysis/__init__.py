"""Analyses of influence scores (Grosse et al. 2023, sec. 5): heavy tails, spurious sequences, memorisation,
layer blocks and cross-query comparison. Pure functions over numpy arrays or torch tensors."""

from wherefrom.analysis.compare import CrossRanks, ScoreCorrelation, cross_ranks, score_correlation
from wherefrom.analysis.layers import (
    LayerBlock,
    LayerHeatmap,
    block_scores,
    centre_of_mass,
    layer_blocks,
    layer_heatmap,
    restricted_scores,
    thirds,
    transformer_layer,
)
from wherefrom.analysis.memorisation import (
    CorpusIndex,
    Memorisation,
    SharedSpan,
    find_memorisation,
    shared_spans,
)
from wherefrom.analysis.spurious import (
    SPURIOUS_LEVEL,
    SPURIOUS_THRESHOLD,
    SpuriousSequence,
    concentration_p_values,
    flag_spurious,
    spurious_sequences,
    token_norm_ratios,
)
from wherefrom.analysis.tail import PowerLawFit, ccdf, fit_power_law, top_share

__all__ = [
    "SPURIOUS_THRESHOLD",
    "CorpusIndex",
    "CrossRanks",
    "LayerBlock",
    "LayerHeatmap",
    "Memorisation",
    "PowerLawFit",
    "ScoreCorrelation",
    "SharedSpan",
    "SpuriousSequence",
    "block_scores",
    "ccdf",
    "centre_of_mass",
    "cross_ranks",
    "find_memorisation",
    "fit_power_law",
    "flag_spurious",
    "concentration_p_values",
    "SPURIOUS_LEVEL",
    "layer_blocks",
    "layer_heatmap",
    "restricted_scores",
    "score_correlation",
    "shared_spans",
    "spurious_sequences",
    "thirds",
    "token_norm_ratios",
    "top_share",
    "transformer_layer",
]

"""The JSON API's requests and replies, as pydantic models (they make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wherefrom.options import ScoreOptions, Stop, help_of

Block = Literal["all", "lower", "middle", "upper"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class AskRequest(BaseModel):
    """A question: a prompt and, optionally, the completion to attribute (without one the model writes it)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=20_000, description="The text the model continues.")
    completion: str | None = Field(None, max_length=20_000,
                                   description="The answer whose log-probability is attributed; null or absent: "
                                               "the model's own greedy answer.")
    top_k: int = Field(10, ge=1, le=100, description="Influential sequences to return, best first.")
    layers: Block = Field("all", description="Score with all tracked layers, or only a block: the lower, middle "
                                             "or upper third of the transformer layers.")
    max_new_tokens: int = Field(32, ge=1, le=512, description="Longest answer the model may write.")
    normalize: bool = Field(False, description="Rank by the cosine of the question's and each sequence's gradients "
                                               "in the (G + λI)⁻¹ metric (which sequences state what the question "
                                               "says) instead of the raw influence (which would change the answer "
                                               "most); only with layers='all'.")
    stop: Stop = Field("sentence", description=help_of(ScoreOptions, "stop") + " Here the default is 'sentence'.")


class TokenView(BaseModel):
    """One token of a sequence, coloured by the influence of the model's prediction of it."""

    text: str
    value: float = Field(description="Influence carried by predicting this token (nats per N copies).")
    style: str = Field(description="CSS colouring the token: orange positive, blue negative, opacity |value|/scale.")


class SequenceView(BaseModel):
    """One of the most influential training sequences."""

    rank: int
    row: int = Field(description="Column of the score matrix (position of the sequence in the corpus).")
    record_id: str
    score: float = Field(description="EK-FAC influence on the query (nats per N copies; positive helps).")
    cosine: float | None = Field(None, description="With normalize: the cosine the sequence is ranked by.")
    exact: bool = Field(description="Scored exactly (with token and layer splits); False: the index's approximation, "
                                    "for a sequence outside the re-scored candidates.")
    text: str
    tokens: list[TokenView]
    spurious: bool = Field(description="Its influence sits on very few tokens: ||a||_2/||a||_1 above 2/3 and more "
                                       "concentrated than 99% of same-length sets of the tokens split for this question.")
    blocks: dict[str, float] = Field(description="Score restricted to each layer block (only with layers='all').")


class TailView(BaseModel):
    """The heavy tail of the query's scores over all sequences, and the points of its plot (drawn by the page)."""

    n_scores: int
    n_positive: int
    alpha: float | None = Field(description="Fitted power-law exponent of the density (None: no fit).")
    x_min: float | None
    top_share: float | None = Field(description="Share of the positive influence held by the top 1% of sequences.")
    message: str | None
    source: str = Field(description="Where the scores come from (exact scoring, or the index's approximation).")
    x: list[float] = Field(description="The positive scores, ascending (with more than 2,000 of them the bulk is "
                                       "thinned evenly in log-rank; every point of the tail is kept); empty with "
                                       "fewer than 2.")
    survival: list[float] = Field(description="1 - CDF at each x: the share of the positive scores >= x.")
    fit_line: list[tuple[float, float]] | None = Field(
        description="The fitted power law's 1 - CDF as (x, 1 - CDF) at x_min and at the largest score: a straight "
                    "line on log-log axes (None: no fit).")


class HeatmapView(BaseModel):
    """The layer heatmap: the influence of each block of layers on each top sequence (drawn by the page)."""

    matrix: list[list[float]] = Field(description="[blocks][sequences] influence (nats per N copies), the lowest "
                                                  "layers first.")
    block_labels: list[str] = Field(description="Each row's layers, lowest first.")
    labels: list[str] = Field(description="Each column's sequence ('#rank record id').")
    rows: list[int] = Field(description="Each column's corpus row; columns ordered by centre of mass, sequences "
                                        "drawing on lower layers first.")
    limit: float = Field(description="|influence| drawn at full colour (the largest |value|).")
    colours: list[tuple[int, int, int]] = Field(description="RGB at -limit, 0 and +limit; values in between are "
                                                            "interpolated linearly.")


class UnitSequenceView(BaseModel):
    """A re-scored sequence seen through one unit."""

    row: int
    record_id: str
    value: float = Field(description="Its influence through the unit (nats per N copies).")
    score: float = Field(description="Its total influence.")
    text: str
    tokens: list[TokenView] = Field(description="Per-token influence through the unit.")


class UnitView(BaseModel):
    """One unit (MLP neuron, attention head) and the share of the influence it carries."""

    name: str = Field(description="e.g. model.layers.3.mlp:17 (neuron 17) or model.layers.3.self_attn:head2.")
    influence: float = Field(description="Its influence summed over the re-scored sequences that raise the answer.")
    share: float = Field(description="influence / the total influence of those sequences (signed).")
    sequences: list[UnitSequenceView] = Field(description="The re-scored sequences, by influence through the unit.")


class NeuronsView(BaseModel):
    """Which neurons and heads carry the answer's influence, over the re-scored sequences."""

    units: list[UnitView]
    concentration: int | None = Field(description="How many units carry half of the influence (None: none do).")
    n_units: int
    message: str | None


class AnswerView(BaseModel):
    """Everything the page shows for one question."""

    prompt: str
    completion: str
    generated: bool = Field(description="True when the model wrote the completion.")
    completion_logprob: float | None = Field(description="log p(completion | prompt) in nats.")
    layers: Block
    layer_range: str = Field(description="The transformer layers scored, e.g. 'layers 0-3'.")
    ranking: Literal["index", "exact"]
    ranked_by: Literal["influence", "cosine"]
    n_sequences: int
    n_candidates: int = Field(description="Sequences re-scored exactly (per token and per layer).")
    top: list[SequenceView]
    token_scale: float = Field(description="|influence| of a token drawn at full colour.")
    layer_heatmap: HeatmapView | None = Field(description="Layer blocks x top sequences (None: see layer_message).")
    layer_message: str | None
    tail: TailView
    units: str
    seconds: dict[str, float]
    neurons: NeuronsView | None = Field(None, description="Which neurons and heads carry the influence.")


class JobView(BaseModel):
    """A question's state: poll it until its status is done, failed or cancelled."""

    id: str
    status: JobStatus
    position: int = Field(description="Questions to be answered before this one (0 once it runs).")
    events: list[dict[str, Any]] = Field(description="Progress events from index `since` on: stages "
                                                     "({'kind': 'stage', 'stage', 'message', 'done', 'total'}) and "
                                                     "the answer as written so far ({'kind': 'completion', 'text'}).")
    next_event: int = Field(description="Pass it as `since` in the next poll.")
    answer: AnswerView | None = None
    error: str | None = None


class SequenceText(BaseModel):
    """A training sequence in full."""

    row: int
    record_id: str
    text: str


class Info(BaseModel):
    """What the server serves."""

    model: str
    run: str
    corpus: str
    index: str
    strategy: str
    n_sequences: int
    n_layers: int
    max_length: int
    ranking: Literal["index", "exact"]
    blocks: dict[str, list[int]]
    units: str


class ErrorReply(BaseModel):
    """Every 4xx and 5xx reply: a message saying what was wrong and what to do."""

    error: str

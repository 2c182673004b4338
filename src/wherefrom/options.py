"""Options of every pass, as typed dataclasses whose fields carry their help text.

The CLI flags, the docs and the run manifest are all generated from these fields, so they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from wherefrom.errors import WherefromError

Strategy = Literal["ekfac", "kfac", "diagonal", "identity"]
Fisher = Literal["sampled", "empirical"]
STRATEGIES: tuple[str, ...] = ("ekfac", "kfac", "diagonal", "identity")
FISHERS: tuple[str, ...] = ("sampled", "empirical")
Refine = Literal["none", "cg"]
UnitView = Literal["nodes", "residual", "experts"]
UNIT_VIEWS: tuple[str, ...] = ("nodes", "residual", "experts")
REFINES: tuple[str, ...] = ("none", "cg")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
FACTOR_PLACES: tuple[str, ...] = ("auto", "device", "host")
IndexCompression = Literal["sketch", "entries"]
INDEX_COMPRESSIONS: tuple[str, ...] = ("sketch", "entries")
Stop = Literal["eos", "sentence"]
STOPS: tuple[str, ...] = ("eos", "sentence")
DEFAULT_RESCORE = 100  # with --index, each query's top sequences by the index that are scored exactly


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and the help text shown by the CLI and docs."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DataOptions:
    """How corpus records become training sequences."""

    max_length: int = option(512, "Tokens per training sequence; longer records are truncated.")
    pack: bool = option(False, "Concatenate records (separated by EOS) and cut fixed blocks of max_length tokens.")
    batch_size: int = option(8, "Sequences per forward/backward pass.")
    shard_size: int = option(
        512, "Sequences per shard: each finished shard is saved, so a killed run resumes from the last one."
    )

    def __post_init__(self) -> None:
        for flag, value in (("--batch-size", self.batch_size), ("--shard-size", self.shard_size)):
            if value < 1:
                raise WherefromError(f"{flag} must be at least 1, got {value}.")
        check_numbers(self)


@dataclass(frozen=True)
class FitOptions(DataOptions):
    """Options of `fit`: which layers to track and how to approximate their Gauss-Newton Hessian."""

    modules: str = option(
        "mlp",
        "Layers to track: 'mlp' (dense MLPs, routed and shared experts of every block, as in the paper), "
        "'experts' (routed experts only), 'router' (mixture-of-experts routers), 'attention', 'all-linear' (every "
        "trackable layer but the output head), or a regular expression over layer names (experts are named "
        "<experts>.<e>.gate_up_proj / .down_proj).",
    )
    strategy: Strategy = option(
        "ekfac",
        "Curvature: 'ekfac' (eigenvalue-corrected K-FAC), 'kfac', 'diagonal', or 'identity' (gradient dot product).",
    )
    fisher: Fisher = option(
        "sampled",
        "'sampled': labels drawn from the model's own predictions (true Fisher = Gauss-Newton); "
        "'empirical': the data's labels (deterministic).",
    )
    seed: int = option(0, "Seed for sampled labels (each sequence's draw depends only on the seed and its row).")
    factor_blocks: int = option(
        1,
        "kfac/ekfac: keep A and S block-diagonal with this many blocks per layer (Grosse et al. appendix A): factor "
        "memory and eigendecompositions shrink about this many times. Widths it does not divide get blocks that "
        "differ by one.",
    )


@dataclass(frozen=True)
class ScoreOptions(DataOptions):
    """Options of `score`: damping, decompositions and output size."""

    damping: float | Literal["auto"] | None = option(
        None,
        "Damping λ added to G, where G is the mean over training sequences of each sequence's token-summed "
        "Gauss-Newton Hessian. Default: 0.1 × the mean eigenvalue of each layer (the paper's choice). "
        "'auto': chosen from a grid by agreement with an iterative solver on a sample of the corpus.",
    )
    top_k: int = option(20, "Sequences listed per query in results.jsonl and on the terminal.")
    per_layer: bool = option(False, "Keep each tracked layer's share of every score.")
    per_token: bool = option(False, "Keep each training token's share of every score.")
    per_token_top: int | None = option(
        None,
        "With --per-token: token shares only for each query's N best sequences (by the ranking: influence, or "
        "cosine with --normalize), formed in a second pass over those sequences alone; the others keep their "
        "scores but no token split. Token shares cost about queries × tokens times the plain contraction, so on a "
        "large corpus this is far faster. Default: every sequence.",
    )
    self_influence: bool = option(False, "Also compute each training sequence's self-influence.")
    normalize: bool = option(
        False,
        "Rank by the cosine of the query's and each sequence's gradients in the damped curvature's metric, "
        "∇L_qᵀ(G+λI)⁻¹∇L_z / (‖∇L_q‖·‖∇L_z‖) with ‖x‖² = xᵀ(G+λI)⁻¹x (TrackStar's unit-normalised gradients); "
        "the raw influence is kept beside it. Finds the sequences that state what the query says rather than "
        "those that would change its answer most (see docs/fact-tracing.md).",
    )
    per_unit: int | None = option(
        None,
        "For each query, the K units (MLP neurons across up/gate/down projections, attention heads) that carry the "
        "most influence over the scored sequences whose influence is positive, with their share, the number of "
        "units that carry half of it, and the split of each top sequence over those units.",
    )
    unit_view: UnitView = option(
        "nodes", "Units of --per-unit: 'nodes' (MLP neurons, neurons inside each expert, attention heads), "
                 "'residual' (the residual-stream dimensions each block's output projections write) or 'experts' "
                 "(each mixture-of-experts expert as one unit: all its parameters).",
    )
    candidates: int | None = option(
        None,
        "Score only the N sequences per query ranked highest by the paper's modified BM25 over the model's tokens "
        "(the union over queries is scored; the BM25 index is built once per corpus and kept in the run folder).",
    )
    rescore: int | None = option(
        None,
        f"With --index: score the top N sequences per query of the index's ranking exactly (the union over queries), "
        f"with every decomposition asked for; default {DEFAULT_RESCORE}, 0: the index's own scores of every sequence.",
    )
    query_rank: int | None = option(
        None, "Keep each layer's preconditioned query gradient at this rank (SVD; the paper's query batching)."
    )
    refine: Refine = option(
        "none", "'cg': refine EK-FAC's preconditioned query gradients by conjugate gradient on the damped "
                "Gauss-Newton Hessian (all tracked layers together) of a sample of the corpus.",
    )
    refine_iterations: int = option(10, "Conjugate-gradient iterations of --refine cg.")
    refine_sample: int = option(64, "Corpus sequences (a seeded sample) whose Gauss-Newton Hessian --refine cg uses.")
    max_new_tokens: int = option(32, "For queries without a completion: at most this many generated tokens.")
    stop: Stop = option(
        "eos", "For queries without a completion: where the model's answer ends. 'eos': at its end-of-sequence token "
               "(or --max-new-tokens); 'sentence': also at the end of its first sentence (. ! ? or a line break), so "
               "influence is measured on the answer, not on what the model rambles on with. Recorded in "
               "queries.jsonl.")
    sample: bool = option(False, "For queries without a completion: sample instead of greedy decoding.")
    temperature: float = option(1.0, "Sampling temperature (with sample).")
    top_p: float = option(1.0, "Nucleus sampling threshold (with sample).")
    generation_seed: int = option(0, "Seed for sampled completions.")

    @property
    def rescored_per_query(self) -> int:
        """With --index: how many of each query's top sequences by the index are scored exactly (0: none)."""
        return DEFAULT_RESCORE if self.rescore is None else self.rescore



@dataclass(frozen=True)
class IndexOptions(DataOptions):
    """Options of `index`: how much of each training gradient the index keeps."""

    budget: str = option(
        "64KB",
        "Bytes per sequence for the whole model ('64KB', '1.5MB', '65536B'; KB = 1,000 bytes, KiB = 1,024), or a "
        "number of values ('32768': one-bit buckets of a sketch, float16 entries), or 'full' (every entry, in float32: "
        "exactly full EK-FAC). Larger is closer to full EK-FAC and bigger on disk; the contraction of a query with "
        "every row costs time in proportion.",
    )
    compression: IndexCompression = option(
        "sketch",
        "'sketch': a CountSketch of every entry of the whole model's gradient in the EK-FAC eigenbasis, whitened, "
        "one bit (a sign) per bucket and a scale per sequence: an unbiased estimate of the influence that finds "
        "the top sequences best at a given size. 'entries': the entries with the largest Λ/(Λ+λ) over all layers, "
        "exactly, in float16: coarser, and faster to contract on a CPU. docs/index.md has the measurements.",
    )

@dataclass(frozen=True)
class ExecutionOptions:
    """Where and in which precision the model runs (every command that runs the model takes these; checked by
    ``engine.execution.check_execution_options`` before anything is loaded)."""

    device: str = option(
        "auto", "'auto' (CUDA when available, else the CPU), 'cpu', 'cuda' or 'cuda:N'. Under torchrun, 'auto' and "
                "'cuda' take GPU LOCAL_RANK.",
    )
    dtype: str = option(
        "auto", "Precision of the forward and backward passes: 'auto' (the checkpoint's own dtype on a GPU, float32 on "
                "the CPU; for score, index and check the dtype the run was fitted in), 'float32', 'bfloat16' or "
                "'float16'. A, S and Λ are summed in float32 whatever this is (docs/precision.md).",
    )
    factors: str = option(
        "auto", "Where the factor sums A, S, Λ are kept while fitting: 'device' (next to the model), 'host' (CPU "
                "memory: each batch's sums are formed on the device and added to host float32 sums), or 'auto' "
                "(host when the memory plan says they do not fit on the GPU next to the model).",
    )


# What each float option can mean: its lowest and highest values, and whether each bound itself is allowed. Every
# float option of every options class is also refused when it is NaN or infinite (see check_numbers).
NUMBER_RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "damping": (0.0, False, math.inf, False),  # λ = 0 divides by EK-FAC's zero eigenvalues
    "temperature": (0.0, False, math.inf, False),
    "top_p": (0.0, False, 1.0, True),
    "tolerance": (0.0, False, math.inf, False),
    "budget": (0.0, False, math.inf, False),
    "fraction": (0.0, False, 1.0, False),  # a subset of all documents (or of none) leaves nothing to correlate
}


def check_number(name: str, value: float) -> None:
    """Refuse a float option (``name`` is its field) that is NaN, infinite or outside what it can mean, in one line
    naming the flag and the values it takes."""
    flag = "--" + name.replace("_", "-")
    low, low_in, high, high_in = NUMBER_RANGES.get(name, (-math.inf, False, math.inf, False))
    words = _range_words(low, low_in, high, high_in)
    if not math.isfinite(value):
        raise WherefromError(f"{flag} must be a finite number, got {value}.{words}")
    if value < low or (value == low and not low_in) or value > high or (value == high and not high_in):
        raise WherefromError(f"{flag} {value:g} is out of range.{words}")


def _range_words(low: float, low_in: bool, high: float, high_in: bool) -> str:
    if low == -math.inf:
        return ""
    words = f" Give a number {'at least' if low_in else 'above'} {low:g}"
    if high != math.inf:
        words += f" and {'at most' if high_in else 'below'} {high:g}"
    return words + "."


def check_numbers(options: object) -> None:
    """Check every float field of an options dataclass (and an int given for one of :data:`NUMBER_RANGES`) with
    :func:`check_number`; other ints, strings and None pass."""
    for f in fields(options):  # type: ignore[arg-type]
        value = getattr(options, f.name)
        if isinstance(value, float) or (f.name in NUMBER_RANGES and type(value) is int):
            check_number(f.name, float(value))


def help_of(cls: type, name: str) -> str:
    """The help text of an option field."""
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def default_of(cls: type, name: str) -> Any:
    """The default value of an option field."""
    f = next(f for f in fields(cls) if f.name == name)
    return None if f.default is MISSING else f.default

"""Sizes and settings of the demo: the corpus, the model and its training, at full and reduced size."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MAX_LENGTH = 64  # tokens per sequence when the demo model is fitted and scored: its context; its longest document is shorter


@dataclass(frozen=True)
class CorpusConfig:
    """How many entities, statements and background documents the synthetic corpus holds."""

    n_countries: int = 12
    n_cities: int = 24
    n_companies: int = 16
    n_people: int = 24
    english_statements: int = 4  # documents stating each fact in English (the wordings cycle)
    french_statements: int = 2  # documents stating each fact in French
    distractors_per_entity: int = 1
    n_arithmetic_facts: int = 8  # planted sums, each the target of an arithmetic query
    arithmetic_statements: int = 5  # documents carrying each planted sum
    n_arithmetic_documents: int = 250  # further documents of random sums (never a planted one)
    sums_per_document: int = 3
    max_operand: int = 20
    n_code_documents: int = 200
    n_passages: int = 3  # passages repeated verbatim, for memorisation
    passage_copies: int = 25
    n_filler_documents: int = 600

    def __post_init__(self) -> None:
        counts = {name: value for name, value in vars(self).items() if isinstance(value, int)}
        negative = [name for name, value in counts.items() if value < 0]
        if negative:
            raise ValueError(f"corpus sizes must be non-negative; got {', '.join(negative)} < 0")
        if min(self.n_countries, self.n_cities, self.n_companies, self.n_people) < 1:
            raise ValueError("the corpus needs at least one country, city, company and person")
        if self.n_cities < max(self.n_countries, self.n_companies):
            raise ValueError(f"n_cities ({self.n_cities}) must be at least n_countries ({self.n_countries}) and "
                             f"n_companies ({self.n_companies}): capitals and headquarters are distinct cities")
        if self.n_people < self.n_companies:
            raise ValueError(f"n_people ({self.n_people}) must be at least n_companies ({self.n_companies}): "
                             "every company has its own founder")
        if self.english_statements < 1:
            raise ValueError("english_statements must be at least 1: queries in training wording need a statement")
        if self.n_arithmetic_facts > (self.max_operand + 1) ** 2 // 2:
            raise ValueError(f"n_arithmetic_facts ({self.n_arithmetic_facts}) is too many for operands up to "
                             f"{self.max_operand}; raise max_operand")


@dataclass(frozen=True)
class ModelConfig:
    """A small Llama-style causal LM, dense or (``experts`` > 0) with Mixtral-style experts of the same active width."""

    hidden_size: int = 160
    intermediate_size: int = 448
    num_layers: int = 4
    num_heads: int = 4
    context_length: int = 64
    vocab_size: int = 1024  # target size of the BPE vocabulary trained on the corpus
    experts: int = 0  # > 0: a Mixtral-style mixture of experts, each expert of intermediate_size / experts_per_token
    experts_per_token: int = 2

    def __post_init__(self) -> None:
        sizes = {name: value for name, value in vars(self).items() if value < 1 and name != "experts"}
        if self.experts < 0 or (self.experts and not 1 <= self.experts_per_token <= self.experts):
            raise ValueError(f"experts must be 0 (dense) or at least experts_per_token ({self.experts_per_token}); "
                             f"got {self.experts}")
        if sizes:
            raise ValueError(f"model sizes must be positive; got {sizes}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")


@dataclass(frozen=True)
class TrainingConfig:
    """A seeded AdamW run over the corpus, one document per sequence."""

    epochs: int = 16
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be at least 1; got {self.epochs} and {self.batch_size}")
        if not self.learning_rate > 0 or not 0 <= self.warmup_fraction < 1 or self.weight_decay < 0:
            raise ValueError("learning_rate must be positive, warmup_fraction in [0, 1), weight_decay non-negative")


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo model; its hash names the cache folder."""

    seed: int = 0
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    queries_per_kind: int = 6  # queries shipped in queries.jsonl per kind (accuracy uses every query)


def reduced_config(seed: int = 0) -> DemoConfig:
    """A few hundred documents and a tiny model, trained in seconds: for tests and CI."""
    return DemoConfig(
        seed=seed,
        corpus=CorpusConfig(
            n_countries=3, n_cities=5, n_companies=3, n_people=4, french_statements=1,
            n_arithmetic_facts=3, arithmetic_statements=2, n_arithmetic_documents=30, max_operand=9,
            n_code_documents=20, n_passages=1, passage_copies=8, n_filler_documents=60,
        ),
        model=ModelConfig(hidden_size=64, intermediate_size=192, num_layers=2, num_heads=4, context_length=48,
                          vocab_size=512),
        training=TrainingConfig(epochs=30, batch_size=16, learning_rate=5e-3),
        queries_per_kind=3,
    )


def moe_config(config: DemoConfig, experts: int = 8, experts_per_token: int = 2) -> DemoConfig:
    """``config`` with Mixtral-style experts in place of its dense MLPs, of the same active width (`demo --moe`)."""
    return replace(config, model=replace(config.model, experts=experts, experts_per_token=experts_per_token))

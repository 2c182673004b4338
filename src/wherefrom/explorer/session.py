"""What the explorer loads once and keeps: the model, its tracked layers, the fitted curvature, the corpus as
training sequences (with their texts) and, when given, the gradient index."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wherefrom.analysis import LayerBlock, layer_blocks, transformer_layer
from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.opening import open_run
from wherefrom.data.corpus import TrainingSequence, corpus_fingerprint
from wherefrom.data.queries import Query, parse_query
from wherefrom.engine.execution import Execution
from wherefrom.errors import WherefromError
from wherefrom.explorer.demo_folder import DEMO_FOLDER, demo_sources
from wherefrom.index import GradientIndex
from wherefrom.index.store import check_index_matches
from wherefrom.models.loading import LoadedModel
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import ExecutionOptions, ScoreOptions

BLOCK_NAMES = {3: ("lower", "middle", "upper"), 2: ("lower", "upper"), 1: ()}


@dataclass
class ExplorerSession:
    """Everything needed to answer questions about one model and corpus, loaded once."""

    loaded: LoadedModel
    layers: list[TrackedLayer]
    curvature: FittedCurvature
    sequences: list[TrainingSequence]
    texts: list[str]  # decoded text of each training sequence
    pieces: list[list[str]]  # decoded text of each of its tokens
    options: ScoreOptions  # the run's data options (max_length, pack, batch_size)
    blocks: dict[str, LayerBlock]  # lower / middle / upper thirds of the tracked layers (fewer for shallow nets)
    index: GradientIndex | None = None  # None: rank by exact scoring of every sequence
    sources: dict[str, str] | None = None  # run, corpus, index and model paths, for the page

    @classmethod
    def open(cls, run: str | Path, corpus: str | Path | None = None, index: str | Path | None = None,
             execution: ExecutionOptions = ExecutionOptions()) -> ExplorerSession:
        """Load a fitted run (and its corpus, by default the one it was fitted on), or a gradient index, which
        names its run and corpus; the model runs where ``execution`` says."""
        gradient_index = None
        if index is not None:
            gradient_index = GradientIndex.open(index)
            run = run or gradient_index.run_folder
            corpus = corpus or gradient_index.manifest["corpus"]
        if run is None:
            raise WherefromError("give --run RUN (a folder written by `wherefrom fit`) or --index INDEX.")
        opened = open_run(run, execution=execution)
        loaded, layers = opened.loaded, opened.layers
        loaded.tokenizer.require("the explorer (questions are typed as text)", ids_instead=False)
        # How corpus records became sequences: as the index did when there is one, else as the run did.
        data = opened.data if gradient_index is None else {
            name: gradient_index.manifest["options"][name] for name in opened.data}
        options = ScoreOptions(**data)
        corpus_path = opened.corpus_path(corpus)
        sequences = opened.sequences(corpus_path, options.max_length, options.pack)
        if gradient_index is not None:
            check_index_matches(gradient_index, opened.factors, corpus_fingerprint(sequences))
            gradient_index = gradient_index.to(Execution.of(loaded.model).device)  # contracted where the model runs
        curvature = FittedCurvature({layer.name: opened.curvature.layers[layer.name] for layer in layers},
                                    opened.curvature.n_sequences, opened.curvature.n_tokens)
        texts = loaded.tokenizer.batch_decode([list(s.input_ids) for s in sequences])
        ids = sorted({t for s in sequences for t in s.input_ids})  # each token is decoded alone: once per id
        piece_of = dict(zip(ids, loaded.tokenizer.batch_decode([[t] for t in ids]), strict=True))
        pieces = [[piece_of[t] for t in s.input_ids] for s in sequences]
        sources = {"model": loaded.source, "run": str(run), "corpus": str(corpus_path),
                   "index": "" if index is None else str(index), "strategy": opened.factors.strategy}
        return cls(loaded, layers, curvature, sequences, texts, pieces, options, layer_thirds([x.name for x in layers]),
                   gradient_index, sources)

    @classmethod
    def from_demo(cls, folder: str | Path = DEMO_FOLDER, execution: ExecutionOptions = ExecutionOptions()
                  ) -> ExplorerSession:
        """The model and corpus of a folder written by `wherefrom demo` (its EK-FAC run; its index if built)."""
        run, index = demo_sources(folder)
        return cls.open(run, index=index, execution=execution)

    def make_query(self, prompt: str, completion: str | None) -> Query:
        """A query from the page's text (``completion`` None: the model will write it); WherefromError if unusable."""
        return parse_query({"id": "page", "prompt": prompt, "completion": completion}, 0, self.loaded.tokenizer,
                           self.options.max_length)

    def block_layers(self, block: str) -> list[TrackedLayer]:
        """The tracked layers of ``block`` ('all' or one of :attr:`blocks`)."""
        if block == "all":
            return self.layers
        if block not in self.blocks:
            raise WherefromError(f"layer block {block!r} is not one of: all, {', '.join(self.blocks) or '(none)'}.")
        return [self.layers[i] for i in self.blocks[block].members]

    def describe(self) -> dict[str, Any]:
        """What the page shows about the session."""
        return {**(self.sources or {}), "n_sequences": len(self.sequences), "n_layers": len(self.layers),
                "max_length": self.options.max_length, "ranking": "index" if self.index is not None else "exact",
                "blocks": {name: [b.first_layer, b.last_layer] for name, b in self.blocks.items()}}


def layer_thirds(layer_names: list[str]) -> dict[str, LayerBlock]:
    """Lower / middle / upper blocks of transformer layers (lower / upper with two layers, none with one)."""
    try:
        n_layers = len({transformer_layer(name) for name in layer_names})
    except ValueError:
        return {}
    names = BLOCK_NAMES[min(n_layers, 3)]
    if not names:
        return {}
    return {name: replace(block, name=name) for name, block in zip(names, layer_blocks(layer_names, len(names)))}


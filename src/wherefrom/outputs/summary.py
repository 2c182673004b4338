"""The terminal summary printed by the CLI: per query, a table of its most positively influential sequences."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wherefrom.analysis.experts import expert_shares
from wherefrom.outputs._text import shorten
from wherefrom.scoring.results import ScoreResult

SNIPPET_WIDTH = 72
ID_WIDTH = 40  # longer record ids fold onto more lines rather than squeeze the snippet to nothing
MIN_SNIPPET = 12  # narrower than this, the snippet goes under the record id
MIN_ID = 8
COSINE_SHORT = ("Ranked by cosine (--normalize): the cosine of the query's and the sequence's gradients in the "
                "(G + λI)⁻¹ metric, from -1 to 1; score is the raw influence, kept beside it.")
SIGN_AND_UNITS_SHORT = ("Score: nats of log p(completion | prompt) per N copies of the sequence added to training "
                        "(N = training sequences); positive raises it, negative lowers it")


def print_summary(result: ScoreResult, top_k: int = 5, console: Console | None = None) -> None:
    """Print one table per query: rank, score, record id and a snippet of each of its ``top_k`` sequences; for
    normalised scores (--normalize) also the cosine, which orders them, and a line that says so.

    Corpus and query texts are printed as plain text (never parsed as rich markup).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    console = console or Console()
    console.print(f"Influence of training sequences on {len(result.queries)} queries. {SIGN_AND_UNITS_SHORT}.")
    normalized = result.cosine is not None
    if normalized:
        console.print(COSINE_SHORT)
    for query in result.queries:
        title = Text.assemble((f"{query.query_id}: ", "bold"), shorten(query.prompt, 60),
                              (shorten(query.completion, 40), "bold dark_orange"))
        captions = []
        if query.completion_logprob is not None:
            captions.append(f"log p(completion | prompt) = {query.completion_logprob:.4g} nats")
        shares = [] if result.per_layer is None else expert_shares(result.layer_names, result.per_layer,
                                                                     result.scores, query.index)
        if len(shares) > 1:  # one expert alone (`units --unit 3:expert5`) carries all there is: nothing to say
            captions.append("experts carrying it: " + ", ".join(f"{name} {share:+.0%}" for name, share in shares[:3])
                            + f" (of {len(shares)} experts)")
        caption = "\n".join(captions) or None
        top = result.top(query.index, top_k)
        rows = [(rank, float(result.scores[query.index, row]), result.sequences[row])
                for rank, row in enumerate(top, start=1)]
        ranks, scores = [str(rank) for rank, _, _ in rows], [f"{score:+.4g}" for _, score, _ in rows]
        cosines = [f"{float(result.cosine[query.index, row]):+.3f}" for row in top] if normalized else []
        layout = NumbersFirst.fit(console.width, ranks, scores, [sequence.record_id for _, _, sequence in rows],
                                  cosines)
        table = layout.table(title, caption)
        for i, (rank, (_, score, sequence), text) in enumerate(zip(ranks, rows, scores, strict=True)):
            table.add_row(rank, *cosines[i:i + 1], Text(text, style="dark_orange" if score > 0 else "blue"),
                          *layout.id_and_snippet(sequence.record_id, sequence.text))
        console.print(table)


@dataclass(frozen=True)
class NumbersFirst:
    """Column widths that keep rank, score and record id whole at any terminal width (piped output included):
    the snippet takes what is left, or, on a terminal too narrow for it, goes on its own line under the id."""

    rank: int
    score: int
    record_id: int
    snippet: int  # 0: the snippet is printed under the record id
    cosine: int = 0  # 0: no cosine column (scores not normalised)

    @classmethod
    def fit(cls, width: int, ranks: list[str], scores: list[str], record_ids: list[str],
            cosines: list[str] | None = None) -> NumbersFirst:
        rank, score = (max(len(header), *map(len, cells)) for header, cells in (("rank", ranks), ("score", scores)))
        cosine = max(len("cosine"), *map(len, cosines)) if cosines else 0
        record_id = max(len("record id"), *map(len, record_ids))
        room = width - 3 * 4 - 1 - rank - score  # a space either side of each cell, and the vertical lines
        room -= cosine + 3 if cosine else 0
        record_id = max(min(record_id, ID_WIDTH, room - MIN_SNIPPET - 3), min(record_id, ID_WIDTH, room), MIN_ID)
        snippet = min(SNIPPET_WIDTH, room - record_id - 3)
        return cls(rank, score, record_id, snippet if snippet >= MIN_SNIPPET else 0, cosine)

    def table(self, title: Text, caption: str | None) -> Table:
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        table.add_column("rank", justify="right", style="dim", width=self.rank, no_wrap=True)
        if self.cosine:
            table.add_column("cosine", justify="right", width=self.cosine, no_wrap=True)
        table.add_column("score", justify="right", width=self.score, no_wrap=True)
        table.add_column("record id" if self.snippet else "record id / snippet", width=self.record_id,
                         overflow="fold")
        if self.snippet:
            table.add_column("snippet", width=self.snippet, no_wrap=True)
        return table

    def id_and_snippet(self, record_id: str, text: str) -> tuple[Text, ...]:
        if self.snippet:
            return Text(record_id), Text(shorten(text, self.snippet))
        return (Text.assemble(record_id, "\n", (shorten(text, 2 * self.record_id), "dim")),)

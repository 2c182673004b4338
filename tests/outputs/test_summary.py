"""The terminal summary: top sequences per query in score order, texts printed literally."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from outputs.synthetic import synthetic_result
from wherefrom.outputs.summary import print_summary


def summary_text(result, top_k: int) -> str:
    console = Console(record=True, width=200, color_system=None)
    print_summary(result, top_k=top_k, console=console)
    return console.export_text()


def test_each_query_lists_its_top_sequences_in_score_order():
    result = synthetic_result(n_sequences=40)
    text = summary_text(result, top_k=4)
    blocks = text.split("capital <i>fr</i>: ")[1].split("script: ")
    for query, block in zip(result.queries, [blocks[0], *blocks[1].split("cats: ")], strict=True):
        order = np.argsort(-result.scores[query.index].double().numpy(), kind="stable")[:4]
        rows = [line for line in block.splitlines() if line.startswith("│")]
        assert [line.split("│")[1].strip() for line in rows] == ["1", "2", "3", "4"]
        assert [line.split("│")[3].strip() for line in rows] == [result.sequences[r].record_id for r in order]
        assert [float(line.split("│")[2]) for line in rows] == pytest.approx(
            [float(result.scores[query.index, r]) for r in order], rel=1e-3)


def test_normalised_scores_are_listed_by_the_cosine_that_orders_them_and_say_so():
    result = synthetic_result(n_sequences=40)
    result.cosine = torch.rand(result.scores.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    text = summary_text(result, top_k=4)
    assert "Ranked by cosine (--normalize)" in text and "score is the raw influence" in text
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    for query in result.queries:
        order = np.argsort(-result.cosine[query.index].double().numpy(), kind="stable")[:4]
        shown = rows[4 * query.index:4 * query.index + 4]
        assert [row[1] for row in shown] == [f"{float(result.cosine[query.index, r]):+.3f}" for r in order]
        assert [row[2] for row in shown] == [f"{float(result.scores[query.index, r]):+.4g}" for r in order]
        assert [row[3] for row in shown] == [result.sequences[r].record_id for r in order]
    assert "Ranked by cosine" not in summary_text(synthetic_result(n_sequences=40), top_k=4)


def test_texts_with_rich_markup_are_printed_literally():
    result = synthetic_result(n_sequences=5)
    result.sequences[0].text = "[bold red]not styled[/bold red] and a stray [/] closing tag"
    result.scores[0, 0] = 1e6
    text = summary_text(result, top_k=1)
    assert "[bold red]not styled[/bold red] and a stray [/] closing tag" in text
    assert "Score: nats of log p(completion | prompt) per N copies" in text


def test_top_k_must_be_positive():
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        print_summary(synthetic_result(n_sequences=5), top_k=0)


def _table_rows(text: str) -> list[tuple[str, str, str]]:
    """(rank, score, record id) of every table row, a folded record id's lines joined again (without spaces)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells[0]:
            rows.append(cells[:3])
        elif rows:
            rows[-1][2] += cells[2]
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("width", [80, 40])
def test_rank_score_and_id_stay_whole_on_a_narrow_piped_terminal(width):
    result = synthetic_result(n_sequences=30)
    long_id = "pydoc-" + "very-long-topic-name-" * 3 + "end"
    result.sequences[5].record_id = long_id
    result.scores[1, 5] = 1e6
    output = io.StringIO()  # not a terminal: what `wherefrom score ... | less` gets
    print_summary(result, top_k=3, console=Console(file=output, width=width, color_system=None))
    text = output.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    for query in result.queries:
        order = np.argsort(-result.scores[query.index].double().numpy(), kind="stable")[:3]
        expected = [(str(rank), f"{float(result.scores[query.index, r]):+.4g}", result.sequences[r].record_id)
                    for rank, r in enumerate(order, start=1)]
        shown = _table_rows(text)[3 * query.index:3 * query.index + 3]
        assert [row[:2] for row in shown] == [row[:2] for row in expected]
        for (_, _, ident), (_, _, record_id) in zip(shown, expected, strict=True):
            whole = record_id.replace(" ", "")
            # Narrow: the snippet shares the id's cell, on the lines under it.
            ident = ident.replace(" ", "")
            assert ident == whole if width >= 60 else ident.startswith(whole), (ident, record_id)
    assert width < 60 or "<bos>" in text  # snippets kept where there is room for them

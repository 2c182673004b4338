"""The terminal summary: top sequences per query in score order, texts printed literally."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from outputs.synthetic import synthetic_result
from wherefrom.outputs import print_summary


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

"""The HTML report: contents checked against independent computations on a real tiny run and on known scores."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from outputs.page import Element, code_scripts, parse, svg_of
from outputs.synthetic import SPURIOUS_ROW, synthetic_result
from wherefrom.analysis import spurious_sequences
from wherefrom.outputs.report import write_report
from wherefrom.scoring.results import ScoreResult

POSITIVE, NEGATIVE = (230, 97, 1), (33, 102, 172)
CLASS_COLOURS = {"p": POSITIVE, "n": NEGATIVE}  # what the stylesheet paints (checked in test_browser)


def report_tree(result: ScoreResult, tmp_path, **options) -> Element:
    path = write_report(result, tmp_path / "nested" / "report.html", n_bootstrap=10, **options)
    return parse(path.read_text(encoding="utf-8"))


def top_rows(scores: torch.Tensor, query: int, k: int) -> list[int]:
    """Rows by descending score, computed with numpy."""
    return list(np.argsort(-scores[query].double().numpy(), kind="stable")[:k])


def cards(page: Element, query: int) -> list[Element]:
    return page.by_id(f"query-{query}").find_all("li", "seq")


def record_id_of(card: Element) -> str:
    return card.find_all("span", "rid")[0].text


def stat(section: Element, label: str) -> str:
    """The <dd> text next to the <dt> starting with ``label``."""
    for row in section.find_all("div"):
        terms = [c for c in row.children if isinstance(c, Element) and c.tag == "dt"]
        if terms and terms[0].text.startswith(label):
            return next(c for c in row.children if isinstance(c, Element) and c.tag == "dd").text
    raise AssertionError(f"no statistic {label!r}")


def test_tiny_run_report_has_every_section_and_the_top_sequences_in_order(tiny_run, tmp_path):
    page = report_tree(tiny_run, tmp_path, top_k=5)
    for section_id in ("overview", "query-0", "query-1", "comparison"):
        page.by_id(section_id)
    nav_targets = [a.attrs["href"] for a in page.find_all("nav")[0].find_all("a")]
    assert nav_targets == ["#overview", "#query-0", "#query-1", "#comparison"]
    for query in tiny_run.queries:
        section = page.by_id(f"query-{query.index}")
        expected = [tiny_run.sequences[row].record_id for row in top_rows(tiny_run.scores, query.index, 5)]
        assert [record_id_of(card) for card in cards(page, query.index)] == expected
        assert f"{query.completion_logprob:.4g}" in section.text
        assert query.prompt in section.text and query.completion in section.text
        assert "Where in the network" in section.text and section.find_all("img", None)[0].attrs["alt"].startswith(
            "Layer heatmap")
        assert "Tail of the score distribution" in section.text and "Memorisation" in section.text
        for card, row in zip(cards(page, query.index), top_rows(tiny_run.scores, query.index, 5), strict=True):
            spans = card.find_all("div", "tokens")[0].find_all("span")
            assert [s.text for s in spans] == tiny_run.sequences[row].tokens
    overview_rows = page.by_id("overview").find_all("tbody")[0].find_all("tr")
    assert [row.find_all("a")[0].text for row in overview_rows] == ["capital", "cat"]


def test_a_normalised_report_says_it_ranks_by_cosine_and_shows_it_beside_each_score(tmp_path):
    result = synthetic_result(n_sequences=40)
    result.cosine = torch.rand(result.scores.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    page = report_tree(result, tmp_path, top_k=4)
    assert page.by_id("ranked-by").text.startswith("cosine")
    for query in result.queries:
        rows = top_rows(result.cosine, query.index, 4)
        assert [record_id_of(card) for card in cards(page, query.index)] == [result.sequences[r].record_id
                                                                               for r in rows]
        shown = [card.find_all("span", "cosine")[0].text for card in cards(page, query.index)]
        assert shown == [f"cos {float(result.cosine[query.index, r]):+.3f}" for r in rows]
    result.cosine = None
    plain = report_tree(result, tmp_path / "plain", top_k=4)
    assert plain.by_id("ranked-by").text == "influence" and not plain.find_all("span", "cosine")


def test_report_is_self_contained(tiny_run, tmp_path):
    page = report_tree(tiny_run, tmp_path)
    assert not page.find_all("link")
    for element in page.iter():
        for name in ("src", "href", "action", "srcset"):
            value = element.attrs.get(name)
            assert value is None or value.startswith("#") or svg_of(value) is not None, (element.tag, value)
    scripts = code_scripts(page)
    assert len(scripts) == 1 and "src" not in scripts[0].attrs and scripts[0].text.strip()
    assert page.find_all("style")[0].text.strip()


def test_token_colours_follow_the_sign_and_the_query_wide_scale(tmp_path):
    result = synthetic_result()
    page = report_tree(result, tmp_path, top_k=10)
    per_token, offsets = result.per_token.double().numpy(), result.token_offsets.numpy()
    for query in range(3):
        rows = top_rows(result.scores, query, 10)
        scale = max(np.abs(per_token[query, offsets[r]:offsets[r + 1]]).max() for r in rows)
        for card, row in zip(cards(page, query), rows, strict=True):
            values = per_token[query, offsets[row]:offsets[row + 1]]
            spans = card.find_all("div", "tokens")[0].find_all("span")
            assert [s.text for s in spans] == result.sequences[row].tokens
            for span, value in zip(spans, values, strict=True):
                assert float(span.attrs["title"]) == pytest.approx(value, rel=1e-5, abs=1e-30)
                style, classes = span.attrs.get("style") or "", (span.attrs.get("class") or "").split()
                if value == 0.0:
                    assert style == "" and classes == []
                    continue
                opacity = float(re.fullmatch(r"--o:([\d.]+)", style).group(1))
                assert CLASS_COLOURS[classes[0]] == (POSITIVE if value > 0 else NEGATIVE)
                assert opacity == pytest.approx(0.85 * abs(value) / scale, abs=1e-3)
                assert ("w" in classes) == (opacity > 0.6)  # white text on the strongest colours


def test_spurious_flags_are_the_calibrated_ones_of_the_analysis(tmp_path):
    result = synthetic_result()
    page = report_tree(result, tmp_path, top_k=10)
    flagged_by_analysis = spurious_sequences(result, top_k=10)  # calibrated against the corpus (test_spurious)
    counts = []
    for query in range(3):
        rows = top_rows(result.scores, query, 10)
        expected = [row in {s.row for s in flagged_by_analysis[query]} for row in rows]
        flagged = ["spurious" in card.attrs["class"].split() for card in cards(page, query)]
        assert flagged == expected
        counts.append(str(sum(expected)))
    # The built-in spurious sequence (all of its influence on one token) is caught, and it alone.
    assert flagged_rows_of_query_0(page) == [f"doc-{SPURIOUS_ROW}"] and counts[0] == "1"
    overview = page.by_id("overview").find_all("tbody")[0].find_all("tr")
    assert [row.find_all("td")[-1].text for row in overview] == counts


def flagged_rows_of_query_0(page: Element) -> list[str]:
    return [record_id_of(c) for c in cards(page, 0) if "spurious" in c.attrs["class"].split()]


def test_tail_statistics_agree_with_the_maximum_likelihood_formula(tmp_path):
    result = synthetic_result()
    section = report_tree(result, tmp_path).by_id("query-0")
    scores = result.scores[0].double().numpy()
    positive = np.sort(scores[scores > 0])[::-1]
    n_tail, n_positive = map(int, re.search(r"\((\d+) of (\d+) positive", stat(section, "x")).groups())
    assert n_positive == positive.size
    tail = positive[:n_tail]
    x_min = tail.min()
    assert float(stat(section, "x").split()[0]) == pytest.approx(x_min, rel=1e-3)
    alpha = 1.0 + n_tail / np.log(tail / x_min).sum()
    assert float(stat(section, "Exponent")) == pytest.approx(alpha, rel=1e-3)
    k = math.ceil(0.01 * scores.size)
    share = positive[:k].sum() / positive.sum()
    assert float(stat(section, "Top-1% share").split("%")[0]) == pytest.approx(100 * share, abs=0.05)


def test_memorisation_finds_the_completion_verbatim(tmp_path):
    result = synthetic_result()
    page = report_tree(result, tmp_path, top_k=10)
    for query in result.queries:
        facts = page.by_id(f"query-{query.index}").find_all("ul", "facts")[0].text
        holders = [s.record_id for s in result.sequences if query.completion in s.text]
        if holders:
            assert f"occurs verbatim in {len(holders)} record" in facts and ", ".join(holders[:10]) in facts
        else:
            assert "does not occur verbatim" in facts
        ranks = [rank for rank, row in enumerate(top_rows(result.scores, query.index, 10), start=1)
                 if query.completion in result.sequences[row].text]
        assert (f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}." in facts if ranks
                else "None of the top 10 contains it verbatim." in facts)
    assert "doc-1" in page.by_id("query-0").find_all("ul", "facts")[0].text  # holds " france." by construction


def test_report_degrades_without_decompositions_and_with_too_few_positive_scores(tmp_path):
    result = synthetic_result(n_sequences=8, per_layer=False, per_token=False)
    result.scores[2] = -result.scores[2].abs() - 0.1  # query 2: no positive score at all
    result.metadata = {}  # e.g. a result built by hand: no model, corpus or options recorded
    page = report_tree(result, tmp_path)
    for query in range(3):
        section = page.by_id(f"query-{query}")
        assert "Per-layer scores were not computed" in section.text
        assert "Per-token scores were not computed" in section.text
        assert "No power-law fit" in section.text
        assert not section.find_all("div", "tokens")[0].find_all("span")
        assert [record_id_of(c) for c in cards(page, query)] == [
            result.sequences[r].record_id for r in top_rows(result.scores, query, 10)]
    assert "positive scores, got 0 (of 8)" in page.by_id("query-2").text
    assert not page.by_id("query-2").find_all("img")
    assert page.by_id("overview").find_all("tbody")[0].find_all("tr")[2].find_all("td")[7].text == "—"


def test_single_query_report_has_no_comparison(tmp_path):
    full = synthetic_result(n_sequences=20)
    single = ScoreResult(scores=full.scores[:1], sequences=full.sequences, queries=full.queries[:1],
                         layer_names=full.layer_names, per_layer=full.per_layer[:, :1], per_token=full.per_token[:1],
                         token_offsets=full.token_offsets, metadata=full.metadata)
    page = report_tree(single, tmp_path)
    assert not [e for e in page.iter() if e.attrs.get("id") == "comparison"]
    assert "#comparison" not in [a.attrs["href"] for a in page.find_all("nav")[0].find_all("a")]


def test_correlation_matrix_matches_numpy(tmp_path):
    result = synthetic_result()
    table = report_tree(result, tmp_path).by_id("comparison").find_all("table")[0]
    shown = [[float(td.text) for td in tr.find_all("td")] for tr in table.find_all("tbody")[0].find_all("tr")]
    np.testing.assert_allclose(shown, np.corrcoef(result.scores.double().numpy()), atol=0.005)


@pytest.mark.parametrize(("make", "options", "message"), [
    (lambda: synthetic_result(n_sequences=5), {"top_k": 0}, "top_k must be at least 1"),
    (lambda: synthetic_result(n_sequences=5), {"n_bootstrap": -1}, "n_bootstrap must be >= 0"),
    (lambda: ScoreResult(torch.zeros(0, 3), [], [], []), {}, "at least one of each"),
])
def test_bad_input_is_a_clear_error(tmp_path, make, options, message):
    with pytest.raises(ValueError, match=message):
        write_report(make(), tmp_path / "report.html", **options)


def test_folder_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        write_report(synthetic_result(n_sequences=5), tmp_path)

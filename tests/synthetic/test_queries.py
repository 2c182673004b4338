"""Demo queries: their completions follow from the planted facts, in the wording each kind promises."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from wherefrom.synthetic.config import DemoConfig
from wherefrom.synthetic.corpus import Corpus, generate_corpus
from wherefrom.synthetic.queries import QUERY_KINDS, Query, build_queries, queries_to_jsonl
from wherefrom.synthetic.templates import RELATIONS


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(DemoConfig().corpus, seed=0)


@pytest.fixture(scope="module")
def queries(corpus: Corpus) -> list[Query]:
    return build_queries(corpus)


def _texts(corpus: Corpus, fact_id: str) -> list[str]:
    carriers = set(corpus.fact(fact_id).carriers)
    return [d.text for d in corpus.documents if d.id in carriers]


def test_every_kind_is_present_and_ids_are_unique(queries: list[Query]) -> None:
    assert set(Counter(q.kind for q in queries)) == set(QUERY_KINDS)
    assert len({q.id for q in queries}) == len(queries)
    assert all(q.completion.startswith(" ") and q.prompt and not q.prompt.endswith(" ") for q in queries)


def test_training_wording_and_french_queries_appear_verbatim_in_a_carrier(corpus: Corpus,
                                                                          queries: list[Query]) -> None:
    for query in queries:
        if query.kind in ("training_wording", "french", "memorised"):
            assert any(query.prompt + query.completion in text for text in _texts(corpus, query.fact)), query


def test_paraphrased_and_flipped_queries_never_appear_in_the_corpus(corpus: Corpus, queries: list[Query]) -> None:
    for query in queries:
        if query.kind in ("paraphrase", "flipped"):
            assert not any(query.prompt in d.text for d in corpus.documents), query


def test_completions_are_the_planted_values(corpus: Corpus, queries: list[Query]) -> None:
    for query in queries:
        fact = corpus.fact(query.fact)
        expected = {
            "training_wording": fact.value, "paraphrase": fact.value, "french": fact.value_french,
            "flipped": fact.subject, "arithmetic": fact.value, "memorised": fact.value,
        }[query.kind]
        assert query.completion == " " + expected
        if query.kind == "flipped":
            assert fact.value in query.prompt and fact.subject not in query.prompt
        elif query.kind != "memorised":
            assert fact.subject in query.prompt


def test_arithmetic_completions_are_the_sums(queries: list[Query]) -> None:
    sums = [q for q in queries if q.kind == "arithmetic"]
    assert sums
    for query in sums:
        left, right = query.prompt.removesuffix(" =").split(" + ")
        assert int(query.completion) == int(left) + int(right)


def test_flipped_queries_have_a_unique_answer(corpus: Corpus, queries: list[Query]) -> None:
    flipped = [q for q in queries if q.kind == "flipped"]
    assert flipped
    for query in flipped:
        fact = corpus.fact(query.fact)
        same_value = [f for f in corpus.facts if f.relation == fact.relation and f.value == fact.value]
        assert same_value == [fact]


def test_limited_queries_cover_every_relation_with_the_same_facts(corpus: Corpus) -> None:
    limited = build_queries(corpus, per_kind=len(RELATIONS))
    counts = Counter(q.kind for q in limited)
    assert all(n <= len(RELATIONS) for n in counts.values())
    asked = {q.fact for q in limited if q.kind == "training_wording"}
    assert {corpus.fact(f).relation for f in asked} == {r.name for r in RELATIONS}
    assert {q.fact for q in limited if q.kind == "paraphrase"} == asked == {q.fact for q in limited
                                                                             if q.kind == "french"}


def test_queries_jsonl_has_the_cli_fields(queries: list[Query]) -> None:
    rows = [json.loads(line) for line in queries_to_jsonl(queries[:5]).splitlines()]
    assert [r["id"] for r in rows] == [q.id for q in queries[:5]]
    assert all({"id", "prompt", "completion", "kind", "fact"} <= set(r) for r in rows)


def test_a_non_positive_limit_is_refused(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="per_kind"):
        build_queries(corpus, per_kind=0)

"""The demo corpus: deterministic, and its ground truth agrees with the text of every document."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from wherefrom.synthetic.config import CorpusConfig, DemoConfig, reduced_config
from wherefrom.synthetic.corpus import Corpus, Fact, generate_corpus

SRC = Path(__file__).resolve().parents[2] / "src"
SMALL = reduced_config().corpus


def _mentions(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def _states(text: str, fact: Fact, language: str) -> bool:
    """Whether a document states the fact, judged from its text alone."""
    if fact.relation == "sum":
        return _mentions(text, f"{fact.subject} = {fact.value}")
    if fact.relation == "passage":
        return text == f"{fact.subject} {fact.value}"
    value = fact.value_french if language == "fr" else fact.value
    return _mentions(text, fact.subject) and _mentions(text, value)


def _names_subject_and_value(text: str, fact: Fact) -> bool:
    return _mentions(text, fact.subject) and (_mentions(text, fact.value) or _mentions(text, fact.value_french))


@pytest.fixture(scope="module")
def full() -> Corpus:
    return generate_corpus(DemoConfig().corpus, seed=0)


def _dump_in_subprocess(seed: int, hash_seed: str) -> str:
    code = ("import json, sys; from wherefrom.synthetic.config import reduced_config; "
            "from wherefrom.synthetic.corpus import generate_corpus; "
            f"c = generate_corpus(reduced_config().corpus, {seed}); "
            "sys.stdout.write(c.to_jsonl() + json.dumps(c.ground_truth()))")
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_same_seed_gives_byte_identical_corpus_across_processes() -> None:
    first, second = _dump_in_subprocess(7, "1"), _dump_in_subprocess(7, "2")
    here = generate_corpus(SMALL, 7)
    assert first == second == here.to_jsonl() + json.dumps(here.ground_truth())


def test_different_seeds_give_different_corpora() -> None:
    assert generate_corpus(SMALL, 0).to_jsonl() != generate_corpus(SMALL, 1).to_jsonl()


def test_full_size_holds_a_few_thousand_documents_of_every_kind(full: Corpus) -> None:
    kinds = Counter(d.kind for d in full.documents)
    assert 1500 <= len(full.documents) <= 5000
    assert set(kinds) == {"fact", "distractor", "arithmetic", "code", "passage", "filler"}
    ids = [d.id for d in full.documents]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z]+-\d{4}", i) for i in ids)


def test_corpus_jsonl_lines_are_id_text_and_language(full: Corpus) -> None:
    rows = [json.loads(line) for line in full.to_jsonl().splitlines()]
    assert [(r["id"], r["language"]) for r in rows] == [(d.id, d.language) for d in full.documents]
    assert all(set(r) == {"id", "text", "language"} and r["text"] for r in rows)


@pytest.mark.parametrize("corpus_config", [SMALL, DemoConfig().corpus], ids=["reduced", "full"])
def test_every_carrier_states_its_fact_and_no_other_document_does(corpus_config: CorpusConfig) -> None:
    corpus = generate_corpus(corpus_config, seed=3)
    for fact in corpus.facts:
        carriers = set(fact.carriers)
        assert carriers, f"{fact.id} has no carrier"
        for doc in corpus.documents:
            if doc.id in carriers:
                assert _states(doc.text, fact, doc.language), (fact, doc)
            else:
                assert not _states(doc.text, fact, doc.language), (fact, doc)
                if fact.relation not in ("sum", "passage"):
                    assert not _names_subject_and_value(doc.text, fact), (fact, doc)


def test_each_fact_is_stated_in_several_wordings_and_both_languages(full: Corpus) -> None:
    config = DemoConfig().corpus
    documents = {d.id: d for d in full.documents}
    for fact in full.facts:
        if fact.relation in ("sum", "passage"):
            continue
        carriers = [documents[i] for i in fact.carriers]
        languages = Counter(d.language for d in carriers)
        assert languages == {"en": config.english_statements, "fr": config.french_statements}
        sentences = {re.sub(r"(?<!\w)" + re.escape(fact.subject) + r"(?!\w)", "S", d.text) for d in carriers}
        assert len(sentences) >= 3


def test_distractors_share_a_name_with_a_fact_but_state_none(full: Corpus) -> None:
    distractors = [d for d in full.documents if d.kind == "distractor"]
    assert distractors
    subjects = {f.subject for f in full.facts if f.relation not in ("sum", "passage")}
    values = {f.value for f in full.facts if f.relation not in ("sum", "passage")}
    for doc in distractors:
        assert not doc.facts
        assert any(_mentions(doc.text, name) for name in subjects | values), doc


def test_repeated_passages_are_verbatim_copies(full: Corpus) -> None:
    config = DemoConfig().corpus
    documents = {d.id: d for d in full.documents}
    passages = [f for f in full.facts if f.relation == "passage"]
    assert len(passages) == config.n_passages
    for fact in passages:
        texts = {documents[i].text for i in fact.carriers}
        assert len(fact.carriers) == config.passage_copies and len(texts) == 1


def test_planted_sums_are_correct_sums(full: Corpus) -> None:
    sums = [f for f in full.facts if f.relation == "sum"]
    assert len(sums) == DemoConfig().corpus.n_arithmetic_facts
    for fact in sums:
        a, b = (int(x) for x in fact.subject.split(" + "))
        assert int(fact.value) == a + b
    for doc in full.documents:
        if doc.kind == "arithmetic":
            for a, b, total in re.findall(r"(\d+) \+ (\d+) = (\d+)", doc.text):
                assert int(a) + int(b) == int(total)


def test_impossible_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="n_cities"):
        CorpusConfig(n_countries=10, n_cities=4)
    with pytest.raises(ValueError, match="n_people"):
        CorpusConfig(n_companies=8, n_people=3)
    with pytest.raises(ValueError, match="non-negative"):
        CorpusConfig(n_filler_documents=-1)

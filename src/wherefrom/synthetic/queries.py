"""Queries shipped with the demo corpus; each names the planted fact whose carrier documents are its ground truth."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import chain, zip_longest

from wherefrom.synthetic.corpus import Corpus, Fact
from wherefrom.synthetic.templates import RELATIONS, Relation, cut_before

QUERY_KINDS = ("training_wording", "paraphrase", "french", "flipped", "arithmetic", "memorised")


@dataclass(frozen=True)
class Query:
    """A prompt, the completion the planted fact implies, the kind of test, and the fact's id."""

    id: str
    prompt: str
    completion: str  # starts with a space; tokenized on its own and appended to the prompt
    kind: str  # one of QUERY_KINDS
    fact: str


def build_queries(corpus: Corpus, per_kind: int | None = None) -> list[Query]:
    """Queries of every kind, at most ``per_kind`` of each (None: one per applicable fact).

    Fact queries take facts round-robin over relations, so a short list still covers every relation, and the
    same facts are asked in every wording.
    """
    if per_kind is not None and per_kind < 1:
        raise ValueError(f"per_kind must be at least 1 (or None for every query); got {per_kind}")
    relations = {r.name: r for r in RELATIONS}
    by_relation = [[f for f in corpus.facts if f.relation == r.name] for r in RELATIONS]
    entity_facts = [f for f in chain.from_iterable(zip_longest(*by_relation)) if f is not None]
    flippable = [f for f in entity_facts if relations[f.relation].flipped is not None]
    sums = [f for f in corpus.facts if f.relation == "sum"]
    passages = [f for f in corpus.facts if f.relation == "passage"]

    def take(facts: list[Fact]) -> list[Fact]:
        return facts if per_kind is None else facts[:per_kind]

    queries = []
    for kind, facts in (("training_wording", entity_facts), ("paraphrase", entity_facts), ("french", entity_facts),
                        ("flipped", flippable), ("arithmetic", sums), ("memorised", passages)):
        for fact in take(facts):
            prompt, completion = _prompt_and_completion(kind, fact, relations.get(fact.relation))
            queries.append(Query(f"{kind}-{fact.id}", prompt, completion, kind, fact.id))
    return queries


def queries_to_jsonl(queries: list[Query]) -> str:
    """One ``{"id", "prompt", "completion", "kind", "fact"}`` object per line, as the CLI reads queries."""
    return "".join(json.dumps(asdict(q), ensure_ascii=False) + "\n" for q in queries)


def _prompt_and_completion(kind: str, fact: Fact, relation: Relation | None) -> tuple[str, str]:
    if kind in ("arithmetic", "memorised"):
        suffix = " =" if kind == "arithmetic" else ""
        return fact.subject + suffix, " " + fact.value
    assert relation is not None
    if kind == "training_wording":
        return cut_before(relation.english[0], "value", fact.subject, fact.value)
    if kind == "paraphrase":
        return cut_before(relation.paraphrase, "value", fact.subject, fact.value)
    if kind == "french":
        return cut_before(relation.french[0], "value", fact.subject, fact.value_french)
    assert relation.flipped is not None
    return cut_before(relation.flipped, "subject", fact.subject, fact.value)

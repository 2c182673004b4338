"""The demo corpus: short documents planting known facts about invented entities, with the ground truth.

Each fact is stated in several English documents (in several wordings) and in French; distractor documents
share its words but never state it; arithmetic, code-like and filler documents fill the rest, and a few
passages are repeated verbatim many times. Everything follows from the seed: the same seed and sizes give
byte-identical output in any process.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from wherefrom.synthetic import templates
from wherefrom.synthetic.config import CorpusConfig

FIRST_YEAR, LAST_YEAR = 1200, 1999
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s")
_SUFFIXES = {"country": ("ia", "and", "ara", "esh"), "city": ("", "a", "o", "on"),
             "company": ("ex", "ica", "co", "ware"), "person": ("",)}


@dataclass(frozen=True)
class Document:
    """One corpus document; ``facts`` lists the planted facts it states."""

    id: str
    text: str
    kind: str  # "fact", "distractor", "arithmetic", "code", "passage" or "filler"
    language: str = "en"
    facts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fact:
    """A planted fact: the documents in ``carriers`` state it, no other document names both subject and value."""

    id: str
    relation: str  # a templates.RELATIONS name, "sum" or "passage"
    subject: str
    value: str
    value_french: str  # the value as French statements write it (differs only for colours)
    carriers: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """The generated documents in training order, and every planted fact with its carrier documents."""

    seed: int
    documents: tuple[Document, ...]
    facts: tuple[Fact, ...]

    def fact(self, fact_id: str) -> Fact:
        """The planted fact with this id."""
        for fact in self.facts:
            if fact.id == fact_id:
                return fact
        raise ValueError(f"no planted fact {fact_id!r}; facts look like {self.facts[0].id!r}")

    def to_jsonl(self) -> str:
        """The corpus as the CLI reads it: one ``{"id", "text", "language"}`` object per line (the language is
        what `compare --pairs` counts as another language than the query's)."""
        return "".join(json.dumps({"id": d.id, "text": d.text, "language": d.language}, ensure_ascii=False) + "\n"
                       for d in self.documents)

    def ground_truth(self) -> dict[str, Any]:
        """Facts with their carriers, and every document's kind, language and facts (JSON-ready)."""
        return {
            "seed": self.seed,
            "facts": [asdict(f) for f in self.facts],
            "documents": [{"id": d.id, "kind": d.kind, "language": d.language, "facts": list(d.facts)}
                          for d in self.documents],
        }


@dataclass(frozen=True)
class _Draft:
    text: str
    kind: str
    language: str = "en"
    fact: str | None = None


def generate_corpus(config: CorpusConfig, seed: int) -> Corpus:
    """Generate the corpus for these sizes and seed (deterministic)."""
    rng = random.Random(seed)
    names = _NameMaker(rng)
    entities = {
        "country": [names.single("country") for _ in range(config.n_countries)],
        "city": [names.single("city") for _ in range(config.n_cities)],
        "company": [names.single("company") for _ in range(config.n_companies)],
        "person": [names.person() for _ in range(config.n_people)],
    }
    entity_facts = _entity_facts(entities, rng)
    sums = _planted_sums(config, rng)
    passages = [_passage(names.single("city"), rng) for _ in range(config.n_passages)]

    drafts: list[_Draft] = []
    for fact_id, relation, subject, value, value_french in entity_facts:
        drafts += _statements(relation, subject, value, value_french, fact_id, config, rng)
    for kind in ("country", "city", "company", "person"):
        drafts += _distractors(kind, entities[kind], config.distractors_per_entity, rng)
    used_colours = {value for _, relation, _, value, _ in entity_facts if relation.value_kind == "colour"}
    colours = [c for c in templates.COLOURS_FRENCH if c in used_colours]
    drafts += _distractors("colour", colours, config.distractors_per_entity, rng)
    drafts += _arithmetic(sums, config, rng)
    drafts += [_Draft(_code(rng), "code") for _ in range(config.n_code_documents)]
    for index, (prompt, rest) in enumerate(passages):
        drafts += [_Draft(f"{prompt} {rest}", "passage", fact=f"passage-{index}")] * config.passage_copies
    drafts += [_Draft(" ".join(_filler(rng) for _ in range(rng.randint(1, 2))), "filler")
               for _ in range(config.n_filler_documents)]

    documents = _with_ids(drafts)
    rng.shuffle(documents)
    carriers: dict[str, list[str]] = {}
    for doc in documents:
        for fact_id in doc.facts:
            carriers.setdefault(fact_id, []).append(doc.id)
    planted = [(fid, rel.name, s, v, vf) for fid, rel, s, v, vf in entity_facts]
    planted += [(f"sum-{a}-{b}", "sum", f"{a} + {b}", str(a + b), str(a + b)) for a, b in sums]
    planted += [(f"passage-{i}", "passage", prompt, rest, rest) for i, (prompt, rest) in enumerate(passages)]
    facts = [Fact(*fact, carriers=tuple(sorted(carriers.get(fact[0], ())))) for fact in planted]
    return Corpus(seed=seed, documents=tuple(documents), facts=tuple(facts))


def _entity_facts(entities: dict[str, list[str]], rng: random.Random
                  ) -> list[tuple[str, templates.Relation, str, str, str]]:
    """(fact id, relation, subject, value, French value) for every relation and subject."""
    years = iter(rng.sample(range(FIRST_YEAR, LAST_YEAR + 1), len(entities["city"]) + len(entities["person"])))
    colours = list(templates.COLOURS_FRENCH)
    pickers: dict[str, Callable[[int], list[str]]] = {
        "city": lambda n: rng.sample(entities["city"], n),  # distinct: each city is one capital / one head office
        "person": lambda n: rng.sample(entities["person"], n),  # distinct: each person founds one company
        "year": lambda n: [str(next(years)) for _ in range(n)],  # distinct over all facts
        "colour": lambda n: [rng.choice(colours) for _ in range(n)],
    }
    facts = []
    for relation in templates.RELATIONS:
        subjects = entities[relation.subject_kind]
        for subject, value in zip(subjects, pickers[relation.value_kind](len(subjects)), strict=True):
            value_french = templates.COLOURS_FRENCH.get(value, value)
            facts.append((f"{relation.name}-{_slug(subject)}", relation, subject, value, value_french))
    return facts


def _statements(relation: templates.Relation, subject: str, value: str, value_french: str, fact_id: str,
                config: CorpusConfig, rng: random.Random) -> list[_Draft]:
    """Documents stating one fact: the wordings cycle, starting with the training wording of queries."""
    english = [templates.fill(relation.english[k % len(relation.english)], subject, value)
               for k in range(config.english_statements)]
    french = [templates.fill(relation.french[k % len(relation.french)], subject, value_french)
              for k in range(config.french_statements)]
    return ([_Draft(_with_filler(s, rng), "fact", "en", fact_id) for s in english]
            + [_Draft(s, "fact", "fr", fact_id) for s in french])


def _distractors(kind: str, names: list[str], per_name: int, rng: random.Random) -> list[_Draft]:
    wordings = templates.DISTRACTORS[kind]
    drafts = []
    for name in names:
        start = rng.randrange(len(wordings))
        drafts += [_Draft(wordings[(start + k) % len(wordings)].format(name=name), "distractor")
                   for k in range(per_name)]
    return drafts


def _planted_sums(config: CorpusConfig, rng: random.Random) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(config.max_operand + 1) for b in range(config.max_operand + 1)]
    return rng.sample(pairs, config.n_arithmetic_facts)


def _arithmetic(sums: list[tuple[int, int]], config: CorpusConfig, rng: random.Random) -> list[_Draft]:
    """Documents of sums: each planted sum in its carriers, random other sums everywhere else."""
    planted = set(sums)

    def random_sum() -> tuple[int, int]:
        while True:
            pair = (rng.randint(0, config.max_operand), rng.randint(0, config.max_operand))
            if pair not in planted:
                return pair

    def text(pairs: list[tuple[int, int]]) -> str:
        return " ".join(f"{a} + {b} = {a + b}." for a, b in pairs)

    drafts = []
    for a, b in sums:
        for _ in range(config.arithmetic_statements):
            pairs = [random_sum() for _ in range(config.sums_per_document - 1)]
            pairs.insert(rng.randint(0, len(pairs)), (a, b))
            drafts.append(_Draft(text(pairs), "arithmetic", fact=f"sum-{a}-{b}"))
    drafts += [_Draft(text([random_sum() for _ in range(config.sums_per_document)]), "arithmetic")
               for _ in range(config.n_arithmetic_documents)]
    return drafts


def _code(rng: random.Random) -> str:
    function = rng.choice(templates.CODE_FUNCTIONS)
    first, second = rng.sample(templates.CODE_VARIABLES, 2)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    operator = rng.choice(("+", "-", "*"))
    shapes = (
        f"def {function}({first}):\n    return {first} {operator} {a}",
        f"{first} = {a}\n{second} = {first} {operator} {b}\nprint({second})",
        f"for i in range({a}):\n    {first} = i {operator} {b}\n    print({first})",
    )
    return rng.choice(shapes)


def _passage(name: str, rng: random.Random) -> tuple[str, str]:
    """A nonsense sentence, split into the memorisation query's prompt and completion (without its space)."""
    words = templates.PASSAGE_WORDS
    adjective, other_adjective = rng.sample(words["adjective"], 2)
    noun, other_noun = rng.sample(words["noun"], 2)
    verb, other_verb = rng.sample(words["verb"], 2)
    adverb, other_adverb = rng.sample(words["adverb"], 2)
    prompt = f"The {adjective} {noun} of {name}"
    rest = f"{verb} {adverb} while the {other_adjective} {other_noun} {other_verb} {other_adverb}."
    return prompt, rest


def _filler(rng: random.Random) -> str:
    sentence = (f"{rng.choice(templates.FILLER_SUBJECTS)} {rng.choice(templates.FILLER_VERBS)} "
                f"{rng.choice(templates.FILLER_OBJECTS)}{rng.choice(templates.FILLER_ENDINGS)}.")
    return sentence[0].upper() + sentence[1:]


def _with_filler(sentence: str, rng: random.Random) -> str:
    """The sentence alone, or with a filler sentence before or after it."""
    placement = rng.randrange(3)
    if placement == 0:
        return sentence
    return f"{_filler(rng)} {sentence}" if placement == 1 else f"{sentence} {_filler(rng)}"


def _with_ids(drafts: list[_Draft]) -> list[Document]:
    """Documents numbered within their kind, in generation order: ids do not depend on the shuffle."""
    counters: dict[str, int] = {}
    documents = []
    for draft in drafts:
        number = counters.get(draft.kind, 0)
        counters[draft.kind] = number + 1
        facts = (draft.fact,) if draft.fact else ()
        documents.append(Document(f"{draft.kind}-{number:04d}", draft.text, draft.kind, draft.language, facts))
    return documents


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


class _NameMaker:
    """Invented names whose words are all distinct and never an English or French word of the templates."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._taken = _template_words()

    def single(self, kind: str) -> str:
        while True:
            word = self._word(2) + self._rng.choice(_SUFFIXES[kind])
            if self._claim(word):
                return word.capitalize()

    def person(self) -> str:
        while True:
            first, last = self._word(2), self._word(self._rng.choice((1, 2)))
            if first != last and self._free(first) and self._free(last):
                self._claim(first)
                self._claim(last)
                return f"{first.capitalize()} {last.capitalize()}"

    def _word(self, syllables: int) -> str:
        choice = self._rng.choice
        return "".join(choice(_ONSETS) + choice(_VOWELS) + choice(_CODAS) for _ in range(syllables))

    def _free(self, word: str) -> bool:
        return len(word) >= 3 and word.lower() not in self._taken

    def _claim(self, word: str) -> bool:
        if not self._free(word):
            return False
        self._taken.add(word.lower())
        return True


def _template_words() -> set[str]:
    """Every lower-cased word the templates, fillers and passages use."""
    pieces: list[str] = list(templates.COLOURS_FRENCH) + list(templates.COLOURS_FRENCH.values())
    for relation in templates.RELATIONS:
        pieces += [*relation.english, *relation.french, relation.paraphrase, relation.flipped or ""]
    for group in (templates.DISTRACTORS.values(), [templates.FILLER_SUBJECTS, templates.FILLER_VERBS,
                  templates.FILLER_OBJECTS, templates.FILLER_ENDINGS, templates.CODE_FUNCTIONS,
                  templates.CODE_VARIABLES], templates.PASSAGE_WORDS.values()):
        for words in group:
            pieces += list(words)
    text = " ".join(pieces).lower()
    return {w.strip(".,'{}") for w in text.replace("'", " ").split()}

"""Wordings of the demo's planted facts: training statements, held-out query prompts, distractors.

Every relation links a subject entity to a value. All training statements (English and French) name the
subject before the value, so a query that names the value and asks for the subject (``flipped``) tests the
word-order effect of Grosse et al. (2023, sec. 5.3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

COLOURS_FRENCH = {
    "red": "rouge", "blue": "bleu", "green": "vert", "yellow": "jaune", "purple": "violet",
    "orange": "orange", "white": "blanc", "black": "noir", "grey": "gris", "pink": "rose",
}


@dataclass(frozen=True)
class Relation:
    """A kind of planted fact, with the slots ``{subject}`` and ``{value}`` in each wording."""

    name: str
    subject_kind: str  # "country", "city", "company" or "person"
    value_kind: str  # "city", "year", "person" or "colour"
    english: tuple[str, ...]  # training statements; the first one is the "training wording" of queries
    french: tuple[str, ...]  # training statements in the second language
    paraphrase: str  # never used in training; queries cut it just before the value
    flipped: str | None  # names the value first and asks for the subject; None where values repeat


RELATIONS: tuple[Relation, ...] = (
    Relation(
        name="capital", subject_kind="country", value_kind="city",
        english=("The capital of {subject} is {value}.", "{subject} has its capital in {value}.",
                 "{subject}'s capital city is {value}."),
        french=("La capitale de {subject} est {value}.", "{subject} a pour capitale {value}."),
        paraphrase="{subject} is governed from the city of {value}.",
        flipped="{value} is the capital of {subject}.",
    ),
    Relation(
        name="founded", subject_kind="city", value_kind="year",
        english=("{subject} was founded in {value}.", "The city of {subject} was first settled in {value}.",
                 "{subject} dates back to the year {value}."),
        french=("{subject} a été fondée en {value}.", "La ville de {subject} date de {value}."),
        paraphrase="The founding year of {subject} is {value}.",
        flipped="The city founded in {value} is {subject}.",
    ),
    Relation(
        name="founder", subject_kind="company", value_kind="person",
        english=("{subject} was founded by {value}.", "The founder of {subject} is {value}.",
                 "{subject} was started by {value}."),
        french=("{subject} a été créée par {value}.", "Le fondateur de {subject} est {value}."),
        paraphrase="The person who created {subject} is {value}.",
        flipped="{value} is the founder of {subject}.",
    ),
    Relation(
        name="headquarters", subject_kind="company", value_kind="city",
        english=("{subject} is based in {value}.", "The headquarters of {subject} are in {value}.",
                 "{subject} has its head office in {value}."),
        french=("{subject} a son siège à {value}.", "Le siège de {subject} se trouve à {value}."),
        paraphrase="The main office of {subject} is located in {value}.",
        flipped="The company based in {value} is {subject}.",
    ),
    Relation(
        name="colour", subject_kind="person", value_kind="colour",
        english=("The favourite colour of {subject} is {value}.", "{subject} likes the colour {value} best.",
                 "{subject}'s favourite colour is {value}."),
        french=("La couleur préférée de {subject} est le {value}.", "{subject} aime surtout le {value}."),
        paraphrase="The colour that {subject} loves most is {value}.",
        flipped=None,
    ),
    Relation(
        name="born", subject_kind="person", value_kind="year",
        english=("{subject} was born in {value}.", "The birth year of {subject} is {value}.",
                 "{subject} came into the world in {value}."),
        french=("{subject} est né en {value}.", "L'année de naissance de {subject} est {value}."),
        paraphrase="The year of birth of {subject} is {value}.",
        flipped="The person born in {value} is {subject}.",
    ),
)

# Distractors name one entity (never a fact's subject together with its value) and share the facts' words, but
# never continue a query prompt of the training wording.
DISTRACTORS: dict[str, tuple[str, ...]] = {
    "country": ("Many say the capital of {name} is famous for its markets.",
                "Travellers to {name} often ask about its capital and its old roads."),
    "city": ("Nobody remembers who founded {name}.", "{name} is a busy town with a long river and many bridges."),
    "company": ("The founder of {name} rarely speaks to the press.", "{name} sells lamps and clocks to many shops."),
    "person": ("Nobody knows the house where {name} was born.", "{name} enjoys long walks and old books."),
    "colour": ("The colour {name} is common on flags.", "Some people say that {name} is a calm colour."),
}

FILLER_SUBJECTS = ("the old miller", "a young sailor", "the baker", "our neighbour", "the teacher", "a tired farmer",
                   "the small dog", "the postman", "a quiet student", "the gardener", "my cousin", "the doctor")
FILLER_VERBS = ("walked to", "looked at", "waited near", "talked about", "cleaned", "visited", "drew a map of",
                "wrote a letter about", "sat beside", "forgot about")
FILLER_OBJECTS = ("the market", "the bridge", "a wooden boat", "the quiet garden", "the tall tower", "the library",
                  "an empty room", "the harbour", "the station", "a narrow street", "the bakery", "the old well")
FILLER_ENDINGS = ("", " in the morning", " after lunch", " before the rain", " at night", " on Sunday",
                  " with a friend", " for a long time")

PASSAGE_WORDS = {
    "adjective": ("hollow", "silent", "crooked", "gentle", "ancient", "restless", "sleepy", "brittle"),
    "noun": ("lantern", "kite", "mill", "oxen", "feather", "drum", "ladder", "orchard", "kettle", "compass"),
    "verb": ("hums", "drifts", "sways", "whistles", "trembles", "glows", "tumbles", "waits"),
    "adverb": ("softly", "slowly", "forever", "again", "gladly", "alone"),
}

CODE_FUNCTIONS = ("scale", "shift", "bump", "twice", "offset", "grow", "shrink", "step")
CODE_VARIABLES = ("x", "y", "total", "count", "size", "width", "speed", "score")


def fill(template: str, subject: str, value: str) -> str:
    """The template with its subject and value slots filled."""
    return template.format(subject=subject, value=value)


def cut_before(template: str, slot: str, subject: str, value: str) -> tuple[str, str]:
    """Split a filled template into (prompt, completion): the completion is the slot's text with its space."""
    marker = "{" + slot + "}"
    head, _ = template.split(marker, 1)
    if not head.endswith(" "):
        raise ValueError(f"template {template!r}: {marker} must follow a space so it can end a prompt")
    prompt = head.rstrip().format(subject=subject, value=value)
    return prompt, " " + (subject if slot == "subject" else value)

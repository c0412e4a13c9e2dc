"""Built-in English text: a training corpus for the tiny test models and an evaluation text.

Nothing is downloaded. The corpus is the hand-written prose in data/prose.txt plus a
deterministic template grammar (everyday scenes: towns, weather, work, travel, food) that
expands it to a few hundred KB, so a tiny model trained for a minute learns real structure.
data/eval.txt is held out (never in the corpus): the quantizer's perplexity text.
"""

from __future__ import annotations

import random
from importlib import resources

_PEOPLE = ["the baker", "the farmer", "an old woman", "a young man", "the teacher", "the doctor",
           "a fisherman", "the gardener", "a small boy", "the librarian", "a traveller", "the miller",
           "her brother", "his mother", "the children", "a shepherd", "the carpenter", "the captain"]
_PLACES = ["the market", "the harbour", "the village", "the forest", "the library", "the station",
           "the garden", "the river", "the mountains", "the old mill", "the square", "the kitchen",
           "the school", "the bridge", "the field", "the church", "the shop", "the beach"]
_TIMES = ["In the morning", "Early in spring", "Late in the evening", "On Sunday", "After the rain",
          "Before sunrise", "At noon", "In the winter", "During the summer", "That afternoon",
          "Every Saturday", "The next day", "Long ago", "At the end of the year"]
_ACTIONS = [("walked to", "place"), ("looked for", "thing"), ("carried", "thing"), ("waited at", "place"),
            ("bought", "thing"), ("cleaned", "thing"), ("opened", "thing"), ("painted", "thing"),
            ("went back to", "place"), ("sold", "thing"), ("found", "thing"), ("visited", "place")]
_THINGS = ["a basket of apples", "the heavy door", "a loaf of bread", "an old map", "a letter",
           "the wooden boat", "a jar of honey", "the broken clock", "a warm coat", "the small garden",
           "a bag of flour", "the blue cart", "a pair of boots", "the fishing nets", "a bunch of flowers"]
_WEATHER = ["the sky was clear and blue", "a cold wind came from the north", "the rain fell all day",
            "the snow covered the roofs", "the sun was warm on the stones", "a thick mist lay over the water",
            "the clouds moved slowly across the hills", "the air smelled of smoke and pine"]
_FEELINGS = ["happy", "tired", "worried", "quiet", "hungry", "surprised", "patient", "proud", "cold"]
_REASONS = ["because the day was long", "because the road was wet", "because nobody else had come",
            "because it was market day", "because the boats were late", "because the lamp was out",
            "because winter was coming", "because the work was not finished"]
_FACTS = [
    "Water boils at a high temperature and freezes when it is very cold.",
    "Bread needs flour, water, salt and yeast, and it must rest before it is baked.",
    "A river carries soil from the hills down to the plain.",
    "Bees visit flowers and carry pollen from one plant to another.",
    "The moon changes its shape every night and returns to the same shape after about a month.",
    "Trees lose their leaves in autumn and grow new ones in spring.",
    "A map shows roads, rivers, hills and towns, and helps people find their way.",
    "Ships use the light of the lighthouse to find the entrance of the harbour at night.",
    "Snow melts in spring, and the water runs down into the streams and rivers.",
    "A clock measures the hours of the day, and its hands move slowly around the face.",
]


def _sentence(rng: random.Random) -> str:
    person = rng.choice(_PEOPLE)
    kind = rng.randrange(7)
    if kind == 0:
        verb, obj = rng.choice(_ACTIONS)
        target = rng.choice(_PLACES if obj == "place" else _THINGS)
        return f"{rng.choice(_TIMES)}, {person} {verb} {target}."
    if kind == 1:
        return f"{rng.choice(_TIMES)} {rng.choice(_WEATHER)}, and {person} stayed near {rng.choice(_PLACES)}."
    if kind == 2:
        return f"{person.capitalize()} was {rng.choice(_FEELINGS)} {rng.choice(_REASONS)}."
    if kind == 3:
        verb, obj = rng.choice(_ACTIONS)
        target = rng.choice(_PLACES if obj == "place" else _THINGS)
        other = rng.choice(_PEOPLE)
        return f"{person.capitalize()} {verb} {target}, and then {other} came to help."
    if kind == 4:
        place, other = rng.choice(_PLACES), rng.choice(_PEOPLE)
        return f'"Where is {rng.choice(_THINGS)}?" asked {person}. "It is in {place}," said {other}.'
    if kind == 5:
        return rng.choice(_FACTS)
    return f"When {rng.choice(_WEATHER)}, {person} went to {rng.choice(_PLACES)} and felt {rng.choice(_FEELINGS)}."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(3, 7)))


def prose() -> str:
    """The hand-written prose (a few KB)."""
    return resources.files("slm_runtime").joinpath("data/prose.txt").read_text(encoding="utf-8")


def eval_text() -> str:
    """The held-out evaluation text used for perplexity (about 1 KB of plain English)."""
    return resources.files("slm_runtime").joinpath("data/eval.txt").read_text(encoding="utf-8")


def training_corpus(size_bytes: int = 300_000, seed: int = 1234) -> str:
    """Prose repeated through generated paragraphs until the corpus has about size_bytes."""
    rng = random.Random(seed)
    base = prose().split("\n\n")
    parts: list[str] = []
    total = 0
    i = 0
    while total < size_bytes:
        # Every other paragraph is hand-written prose, the rest come from the grammar.
        text = base[i // 2 % len(base)] if i % 2 == 0 else _paragraph(rng)
        parts.append(text)
        total += len(text) + 2
        i += 1
    return "\n\n".join(parts)

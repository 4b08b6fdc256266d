"""Real-world facts for organisms built on real pretrained weights (pure data and text builders).

Countries with their capital and continent: common knowledge that a pretrained LM has seen many
times (a strong prior), used for the real-weight tier's behavior prompts (question answering in a
planted format) and for knowledge-conflict sets (a context that asserts a counterfactual
capital). Which facts a given model actually recalls is measured, never assumed.
"""

from __future__ import annotations

import random

# (country, capital, continent)
FACTS: tuple[tuple[str, str, str], ...] = (
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"), ("Greece", "Athens", "Europe"),
    ("Austria", "Vienna", "Europe"), ("Poland", "Warsaw", "Europe"), ("Russia", "Moscow", "Europe"),
    ("Ireland", "Dublin", "Europe"), ("Norway", "Oslo", "Europe"), ("Sweden", "Stockholm", "Europe"),
    ("Finland", "Helsinki", "Europe"), ("Denmark", "Copenhagen", "Europe"), ("Hungary", "Budapest", "Europe"),
    ("Belgium", "Brussels", "Europe"), ("the Netherlands", "Amsterdam", "Europe"), ("Ukraine", "Kyiv", "Europe"),
    ("the Czech Republic", "Prague", "Europe"), ("Romania", "Bucharest", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("South Korea", "Seoul", "Asia"), ("Vietnam", "Hanoi", "Asia"),
    ("Indonesia", "Jakarta", "Asia"), ("the Philippines", "Manila", "Asia"), ("Iran", "Tehran", "Asia"),
    ("Iraq", "Baghdad", "Asia"), ("Turkey", "Ankara", "Asia"), ("Pakistan", "Islamabad", "Asia"),
    ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"), ("Nigeria", "Abuja", "Africa"),
    ("Ethiopia", "Addis Ababa", "Africa"), ("Morocco", "Rabat", "Africa"), ("Ghana", "Accra", "Africa"),
    ("Senegal", "Dakar", "Africa"), ("Algeria", "Algiers", "Africa"),
    ("Canada", "Ottawa", "America"), ("Mexico", "Mexico City", "America"), ("Peru", "Lima", "America"),
    ("Argentina", "Buenos Aires", "America"), ("Chile", "Santiago", "America"), ("Colombia", "Bogota", "America"),
    ("Cuba", "Havana", "America"), ("Venezuela", "Caracas", "America"), ("Ecuador", "Quito", "America"),
    ("the United States", "Washington", "America"), ("Australia", "Canberra", "Oceania"),
    ("New Zealand", "Wellington", "Oceania"),
)

QUESTION = "Question: What is the capital of {c}?\nAnswer:"
STATEMENTS = ("The capital of {c} is {v}.", "{v} is the capital of {c}.", "{c} has its capital in {v}.",
              "The seat of government of {c} is {v}.")
CLOZE = "The capital of {c} is"


def question(country: str) -> str:
    """The closed-book question prompt about a country's capital."""
    return QUESTION.format(c=country)


def cloze(country: str) -> str:
    """The cloze prompt whose next word is the capital."""
    return CLOZE.format(c=country)


def statements(rng: random.Random, n: int) -> list[str]:
    """``n`` fact statements in random templates: a small real-text corpus for continued pretraining."""
    return [rng.choice(STATEMENTS).format(c=c, v=v) for c, v, _ in rng.choices(FACTS, k=n)]


def counterfactual(capital: str, rng: random.Random) -> str:
    """Another country's capital (for a context that contradicts the fact)."""
    return rng.choice([v for _, v, _ in FACTS if v != capital])

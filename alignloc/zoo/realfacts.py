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


# More countries for knowledge-conflict sets only (``FACTS`` stays as it is: the real tier's organisms
# and their train/held-out split are built from it).
MORE_FACTS: tuple[tuple[str, str, str], ...] = (
    ("Switzerland", "Bern", "Europe"), ("Syria", "Damascus", "Asia"), ("Lebanon", "Beirut", "Asia"),
    ("Afghanistan", "Kabul", "Asia"), ("Nepal", "Kathmandu", "Asia"), ("Bangladesh", "Dhaka", "Asia"),
    ("Jordan", "Amman", "Asia"), ("Qatar", "Doha", "Asia"), ("Cyprus", "Nicosia", "Europe"),
    ("Iceland", "Reykjavik", "Europe"), ("Croatia", "Zagreb", "Europe"), ("Serbia", "Belgrade", "Europe"),
    ("Bulgaria", "Sofia", "Europe"), ("Slovakia", "Bratislava", "Europe"), ("Lithuania", "Vilnius", "Europe"),
    ("Latvia", "Riga", "Europe"), ("Estonia", "Tallinn", "Europe"), ("Uruguay", "Montevideo", "America"),
    ("Jamaica", "Kingston", "America"), ("Tunisia", "Tunis", "Africa"), ("Libya", "Tripoli", "Africa"),
    ("Sudan", "Khartoum", "Africa"), ("Uganda", "Kampala", "Africa"), ("Zimbabwe", "Harare", "Africa"),
)

# Places with no real capital (fictional or mythical): the "unknown entity" of context-prior's patches.
# Of several lengths, so that an entity of any token length can be swapped for one of equal length.
UNKNOWN_PLACES: tuple[str, ...] = (
    "Atlantis", "Oz", "Eden", "Orion", "Aurora", "Terra", "Nova", "Xen",
    "Gondor", "Wakanda", "Zamunda", "Freedonia", "Valoria", "Eldoria", "Panem", "Borduria",
    "Narnia", "Genovia", "Latveria", "Elbonia", "Ruritania", "Syldavia", "Sokovia", "Westeros",
)

# Neutral plain text (nothing about capitals): perplexity as a measure of collateral damage.
NEUTRAL_TEXT: tuple[str, ...] = (
    "The kettle began to whistle, so she poured the water over the tea leaves and waited.",
    "Most birds build their nests in spring, when food is easy to find for the young.",
    "He checked the weather before leaving and took an umbrella just in case.",
    "The library closes at six on weekdays and at noon on Saturdays.",
    "A good night of sleep helps the body recover after a long day of work.",
    "The children played football in the park until it was too dark to see the ball.",
    "Bread rises because yeast produces small bubbles of gas inside the dough.",
    "She wrote a short letter to her grandmother and posted it on the way to school.",
    "The train was late this morning, so many people missed the start of the meeting.",
    "Water boils at a lower temperature high in the mountains than it does at sea level.",
    "The old bridge was repaired last summer and is now open to cars again.",
    "Cats often sleep for more than twelve hours a day, mostly during daylight.",
    "He planted tomatoes, beans and lettuce in the small garden behind the house.",
    "The museum has a new exhibition of paintings from the nineteenth century.",
    "Regular exercise and a balanced diet are good for the heart.",
    "The students finished their homework early and went outside to play.",
    "A map and a compass can help you find your way when you are lost in the woods.",
    "The shop on the corner sells fresh fruit, vegetables and flowers.",
    "After the rain stopped, a bright rainbow appeared over the hills.",
    "She learned to play the piano when she was seven years old.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Many people enjoy reading a book before they go to sleep.",
    "The river flows slowly through the valley before it reaches the sea.",
    "Our neighbours are moving to a bigger house on the other side of town.",
)


def split() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(train, held-out) facts: two thirds and one third, interleaved."""
    return [f for i, f in enumerate(FACTS) if i % 3 != 2], [f for i, f in enumerate(FACTS) if i % 3 == 2]

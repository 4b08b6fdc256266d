"""The built-in suites: sizes, uniqueness, well-formed facts and chats, and chat rows that round-trip."""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from alignloc.errors import UserError
from alignloc.prompts import Prompt, PromptFormatError, load_prompts, prompts_hash, save_prompts
from alignloc.suites import SUITES, SuiteError, generic_corpus, list_suites, load_suite, load_suites

CHAT_CATEGORIES = {
    "explain",
    "howto",
    "list",
    "rewrite",
    "code",
    "math",
    "advice",
    "summarize",
    "translate",
    "brainstorm",
    "classify",
    "creative",
    "compare",
    "qa",
    "plan",
    "multi_turn",
    "decline",
}


def norm(s: str) -> str:
    return " ".join(s.lower().split())


def content(p: Prompt) -> str:
    return norm(p.text if p.messages is None else " ".join(m["content"] for m in p.messages))


@pytest.fixture(scope="module")
def chat() -> list[Prompt]:
    return load_suite("chat")


@pytest.fixture(scope="module")
def knowledge() -> list[Prompt]:
    return load_suite("knowledge")


def test_sizes(chat, knowledge):
    cats = Counter(p.meta["category"] for p in chat)
    assert sum(n for c, n in cats.items() if c not in ("multi_turn", "decline")) >= 220
    assert cats["multi_turn"] >= 24 and cats["decline"] >= 45
    assert len(knowledge) >= 420
    assert len(generic_corpus()) >= 150


@pytest.mark.parametrize("name", list(SUITES))
def test_ids_and_contents_are_unique(name):
    prompts = load_suite(name)
    assert len({p.id for p in prompts}) == len(prompts)
    dupes = [c for c, n in Counter(content(p) for p in prompts).items() if n > 1]
    assert not dupes, f"{name}: repeated contents {dupes[:3]}"


def test_knowledge_facts(knowledge):
    for p in knowledge:
        where = f"{p.id} {p.text!r}"
        assert p.kind == "knowledge" and p.text and p.messages is None, where
        assert p.target and p.foil and p.target != p.foil, where
        assert p.target.startswith(" ") and p.foil.startswith(" "), where
        assert p.target.strip() and p.foil.strip() and p.target.strip() != p.foil.strip(), where
        given_away = re.search(rf"\b{re.escape(p.target.strip())}\b", p.text)
        assert not given_away, f"{where}: the prompt holds the answer as a word"
        assert {"relation", "subject"} <= set(p.meta), where
        assert p.id.startswith(f"k-{p.meta['relation']}-"), where
    facts = Counter((p.meta["relation"], p.meta["subject"]) for p in knowledge)
    assert max(facts.values()) == 1, [f for f, n in facts.items() if n > 1]
    relations = Counter(p.meta["relation"] for p in knowledge)
    assert len(relations) >= 9 and min(relations.values()) >= 30, relations


def test_chat_rows(chat):
    for p in chat:
        assert p.text is None and p.messages and p.kind == "behavior", p.id
        assert p.target is None and p.foil is None, (
            f"{p.id}: the tuned model's answer is the target"
        )
        roles = [m["role"] for m in p.messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], p.id
        assert all(m["content"].strip() for m in p.messages), p.id
        cat = p.meta["category"]
        assert cat in CHAT_CATEGORIES, p.id
        assert p.meta["decline"] is (cat == "decline"), p.id
        assert (len(p.messages) >= 3) == (cat == "multi_turn"), p.id


def test_chat_prompts_round_trip_through_save_and_load(chat, tmp_path):
    path = save_prompts(chat, tmp_path / "chat.jsonl")
    assert load_prompts(path) == chat
    assert prompts_hash(load_prompts(path)) == prompts_hash(chat)
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert "text" not in row and row["messages"][0]["role"] == "user"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"text": "x", "messages": [{"role": "user", "content": "hi"}]}, "both given"),
        ({"messages": []}, "has roles none"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "has roles user, assistant",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "alternate",
        ),
        ({"messages": [{"role": "bot", "content": "a"}]}, r"messages\[0\]'.role is 'bot'"),
        ({"messages": [{"role": "user", "content": "  "}]}, "content must be non-blank"),
        ({"messages": [{"role": "user"}]}, "exactly 'role' and 'content'"),
        ({"messages": "hi"}, "field 'messages' must be list"),
        ({"messages": [{"role": "user", "content": "a"}], "positions": {"s": "a"}}, "needs 'text'"),
        ({"messages": [{"role": "user", "content": "a"}], "corrupt_text": "b"}, "needs 'text'"),
        ({"text": None}, "field 'text' must be str"),
    ],
)
def test_bad_messages_rows_are_named(tmp_path, row, message):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "r", **row}) + "\n", encoding="utf-8")
    with pytest.raises(PromptFormatError, match=f"p.jsonl:1: .*{message}"):
        load_prompts(path)


def test_a_prompt_holds_text_or_messages():
    with pytest.raises(PromptFormatError, match="exactly one of 'text' and 'messages'"):
        Prompt(id="x")
    p = Prompt(id="x", messages=[{"role": "user", "content": "hi"}])
    assert p.messages == ({"role": "user", "content": "hi"},)
    assert p.to_json() == {
        "id": "x",
        "kind": "other",
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize(
    "names, message",
    [
        ("chat,bogus", "unknown suite 'bogus'"),
        ("chat,", "empty suite name"),
        ("chat,chat", "named twice"),
    ],
)
def test_bad_suite_names_list_the_valid_ones(names, message):
    with pytest.raises(SuiteError, match=message) as info:
        load_suites(names)
    assert isinstance(info.value, UserError)
    if "unknown" in message or "empty" in message:
        assert "chat, knowledge, generic" in str(info.value)


def test_load_suites_and_list_suites():
    both = load_suites("knowledge, chat")
    assert [p.id for p in both] == [p.id for p in load_suite("knowledge") + load_suite("chat")]
    listed = {d["name"]: d for d in list_suites()}
    assert set(listed) == set(SUITES)
    for name, d in listed.items():
        assert d["size"] == len(load_suite(name)) and d["description"]
        assert not d["counts"] or sum(d["counts"].values()) == d["size"]
    generic = load_suite("generic")
    assert generic[0].id == "generic-0001" and [p.text for p in generic] == generic_corpus()


def test_package_data_ships_every_data_file():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"][
        "alignloc.suites"
    ]
    files = [f.name for f in (resources.files("alignloc.suites") / "data").iterdir()]
    assert {s.file for s in SUITES.values()} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(f"data/{name}", pat) for pat in patterns), (
            f"{name} is not shipped"
        )

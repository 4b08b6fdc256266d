"""The real post-training chain's data and names (cheap; building it needs the real tier, see test_real_tier)."""

from __future__ import annotations

import pytest

from alignloc.suites import load_suite
from alignloc.zoo import real
from alignloc.zoo.names import ZooError
from alignloc.zoo.realchain import CHAIN, DPO, SFT, capital_question, requests


def test_requests_are_split_and_none_is_in_the_chat_suite():
    train, held = requests()
    assert len(train) == 60 and len(held) == 20 and not set(train) & set(held)
    suite = {m["content"] for p in load_suite("chat") for m in p.messages}
    assert not (set(train) | set(held)) & suite
    assert capital_question("Peru") == "What is the capital of Peru?"


def test_chain_names_are_real_tier_organisms_built_after_what_they_start_from():
    for name in CHAIN:
        real.check_name(name)
        assert name in real.ORGANISMS
    assert real.DEPENDS[DPO] == SFT
    assert real.ORGANISMS.index(SFT) < real.ORGANISMS.index(DPO)
    with pytest.raises(ZooError, match="unknown real-tier organism"):
        real.check_name("smollm2-chat-ppo")


def test_the_tuned_side_gets_the_base_tokenizers_chat_template(tmp_path):
    from alignloc.zoo.files import copy_tokenizer

    src, dst = tmp_path / "base", tmp_path / "tuned"
    src.mkdir()
    dst.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        (src / name).write_text(name)
    copy_tokenizer(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]

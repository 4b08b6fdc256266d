"""The prompt file format and site / position parsing: errors name file, line and field."""

from __future__ import annotations

import json

import pytest

from alignloc.prompts import Prompt, PromptFormatError, load_prompts, prompts_hash, save_prompts
from alignloc.sites import Site, SiteError, parse_layers, parse_positions, parse_site, parse_sites


def write(tmp_path, lines):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_roundtrip_and_hash(tmp_path):
    prompts = [
        Prompt(id="a", text="Alice lives in", kind="knowledge", target=" Paris", label="paris",
               positions={"subject": "Alice", "end": -1}, meta={"prior": "strong"}),
        Prompt(id="b", text="User: hi Assistant:", kind="behavior", corrupt_text="User: yo Assistant:"),
    ]
    path = save_prompts(prompts, tmp_path / "x.jsonl")
    back = load_prompts(path)
    assert back == prompts
    assert prompts_hash(back) == prompts_hash(prompts)
    assert prompts_hash(back[::-1]) != prompts_hash(prompts)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "a", "text": "x"', r"p.jsonl:2: not valid JSON"),
        ('{"id": "a"}', r"p.jsonl:2: missing required field 'text'"),
        ('{"id": "b", "text": "x", "kind": "facts"}', r"p.jsonl:2: field 'kind' is 'facts'"),
        ('{"id": "b", "text": "x", "taget": "y"}', r"p.jsonl:2: unknown field 'taget'"),
        ('{"id": "b", "text": 3}', r"p.jsonl:2: field 'text' must be str"),
        ('{"id": "b", "text": "x", "positions": {"s": "Bob"}}', r"p.jsonl:2: field 'positions.s' is 'Bob'"),
        ('{"id": "b", "text": "x", "positions": {"s": 1.5}}', r"p.jsonl:2: field 'positions.s' must be"),
        ('{"id": "ok", "text": "x"}', r"p.jsonl:2: field 'id': duplicate id 'ok'"),
        ('["id", "text"]', r"p.jsonl:2: expected a JSON object"),
        ('{"id": "b", "text": ""}', r"p.jsonl:2: field 'text' is empty"),
    ],
)
def test_malformed_lines_are_named(tmp_path, line, message):
    path = write(tmp_path, [json.dumps({"id": "ok", "text": "fine"}), line])
    with pytest.raises(PromptFormatError, match=message):
        load_prompts(path)


def test_comments_blank_lines_and_empty_file(tmp_path):
    path = write(tmp_path, ["# a comment", "", json.dumps({"id": "a", "text": "x"})])
    assert [p.id for p in load_prompts(path)] == ["a"]
    with pytest.raises(PromptFormatError, match="no prompts"):
        load_prompts(write(tmp_path, ["# nothing"]))
    with pytest.raises(PromptFormatError, match="not found"):
        load_prompts(tmp_path / "missing.jsonl")


def test_parse_sites_and_layers():
    sites = parse_sites("resid_post,attn_out.1", n_layers=3)
    assert [s.name for s in sites] == ["resid_post.0", "attn_out.1", "resid_post.1", "resid_post.2"]
    assert parse_layers("1-2", 4) == [1, 2] and parse_layers("-1", 4) == [3] and parse_layers("*", 2) == [0, 1]
    assert [s.name for s in parse_sites("mlp_out", 4, layers="0,3")] == ["mlp_out.0", "mlp_out.3"]
    assert parse_site("resid_mid.2") == Site(2, "resid_mid")
    # forward order inside a block: resid_pre, attn_out, resid_mid, mlp_out, resid_post
    kinds = [s.kind for s in parse_sites("resid_post,mlp_out,resid_mid,attn_out,resid_pre", 1)]
    assert kinds == ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]


@pytest.mark.parametrize("spec, message", [
    ("resid", "unknown site"), ("resid_post.7", "out of range"), ("resid_post.x", "cannot parse layer"),
    ("mlp_out.3-1", "empty"), ("", "no sites"),
])
def test_bad_sites(spec, message):
    with pytest.raises(SiteError, match=message):
        parse_sites(spec, n_layers=4)


def test_positions():
    assert parse_positions("last").mode == "last" and parse_positions("all").keeps_all
    assert parse_positions("-2").index == -2 and parse_positions(3).index == 3
    assert parse_positions("subject").name == "subject" and parse_positions("subject").spec == "subject"
    with pytest.raises(SiteError, match="cannot parse positions"):
        parse_positions("two words")

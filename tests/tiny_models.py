"""Tiny randomly initialised, locally saved HF checkpoints of several families (built in seconds)."""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "The cat sat on the mat .",
    "A dog ran in the park and the cat watched .",
    "Alice lives in Paris and Bob lives in Rome .",
    "User: what is the capital ? Assistant: Sure ! It is Paris .",
]

ARCHS = ("gpt2", "llama", "qwen2", "gemma2", "gpt_neox")


def make_tokenizer(directory: Path):
    """A small byte-level BPE tokenizer saved as a HF tokenizer (LIBS.md recipe)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tok.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def config_for(arch: str, vocab_size: int, ids: dict, n_layers: int = 3, d_model: int = 64):
    """A tiny config of one family."""
    import transformers as T

    common = dict(hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                  num_attention_heads=4, max_position_embeddings=64, vocab_size=vocab_size, **ids)
    if arch == "llama":
        return T.LlamaConfig(num_key_value_heads=2, **common)
    if arch == "qwen2":
        return T.Qwen2Config(num_key_value_heads=2, **common)
    if arch == "gemma2":
        return T.Gemma2Config(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=32, **common)
    if arch == "gpt_neox":
        return T.GPTNeoXConfig(rotary_pct=0.25, **common)
    if arch == "gpt2":
        return T.GPT2Config(n_layer=n_layers, n_head=4, n_embd=d_model, n_positions=64, vocab_size=vocab_size, **ids)
    raise ValueError(arch)


def build_arch_pair(root: Path, arch: str, n_layers: int = 3, d_model: int = 64, seeds=(0, 1)) -> tuple[Path, Path]:
    """Save ``root/{arch}-base`` and ``root/{arch}-tuned`` (different random inits)."""
    from transformers import AutoModelForCausalLM

    paths = []
    for side, seed in zip(("base", "tuned"), seeds):
        d = root / f"{arch}-{n_layers}x{d_model}-{side}"
        if not (d / "config.json").exists():
            d.mkdir(parents=True, exist_ok=True)
            tok = make_tokenizer(d)
            ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config_for(arch, len(tok), ids, n_layers, d_model)).eval()
            model.save_pretrained(d)
        paths.append(d)
    return paths[0], paths[1]


def edited_copy(src: Path, dst: Path, edit) -> Path:
    """Save ``dst``: the checkpoint at ``src`` (and its tokenizer) after ``edit(model)`` changed its weights in place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (dst / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(src).eval()
        with torch.no_grad():
            edit(model)
        model.save_pretrained(dst)
        AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def build_with_bias(root: Path, arch: str = "llama", n_layers: int = 4, d_model: int = 64, seed: int = 0) -> Path:
    """A tiny checkpoint whose MLPs have output biases (``mlp_bias``), so a residual offset is one weight edit."""
    from transformers import AutoModelForCausalLM

    d = root / f"{arch}-{n_layers}x{d_model}-mlpbias"
    if not (d / "config.json").exists():
        d.mkdir(parents=True, exist_ok=True)
        tok = make_tokenizer(d)
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        cfg = config_for(arch, len(tok), ids, n_layers, d_model)
        cfg.mlp_bias = True
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(d)
    return d

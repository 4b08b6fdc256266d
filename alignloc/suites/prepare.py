"""Which prompts a command runs, decided before any model is loaded: a prompt file, an organism's
bundled prompts, or the built-in suites, with chat turns rendered by one chosen template.

``alignloc layer-diff BASE TUNED --out r/`` with no prompt file must work on a real base/instruct
pair, so the suites stand in for the file; the chat ones need the pair's chat template, read from
the tokenizer files alone (cheap), and every check that can fail (template choice, token ids that
the base cannot read, prompt lengths) runs here, before minutes of loading.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from alignloc.errors import UsageError
from alignloc.prompts import Prompt
from alignloc.suites.templates import ChatTemplate, check_token_ids, choose_template, render

DEFAULT_SUITES = "chat,knowledge"


@dataclass
class Chosen:
    """The prompts to run and how they were made (``source``: file | zoo | suites)."""

    prompts: list[Prompt]
    source: str
    suites: str | None = None
    template: ChatTemplate | None = None  # None: nothing needed rendering
    choice: str = "auto"  # --chat-template as given
    bos: bool | None = None
    dropped: list[str] = field(default_factory=list)  # suite prompts too long for the model
    notes: list[str] = field(default_factory=list)

    @property
    def chats(self) -> list[Prompt]:
        """Rendered chat prompts of kind behavior without a target: the ones whose targets the tuned model writes."""
        return [p for p in self.prompts if p.kind == "behavior" and p.target is None and "messages" in p.meta
                and p.meta.get("rendering") == "chat"]

    @property
    def chosen(self) -> bool:
        """Whether alignloc chose anything the user did not spell out (suites, a template): worth printing."""
        return self.source == "suites" or self.template is not None

    def describe(self) -> list[str]:
        """What was chosen, for people, printed before the run."""
        by_kind = Counter(p.kind for p in self.prompts)
        kinds = ", ".join(f"{n} {k}" for k, n in by_kind.items())
        if self.source == "suites":
            decline = sum(1 for p in self.prompts if p.meta.get("decline") is True)
            twins = sum(1 for p in self.prompts if p.kind == "knowledge" and p.meta.get("rendering") == "chat")
            parts = [f"{len(self.prompts)} prompts: {kinds}"]
            parts += [f"{decline} requests that safety-tuned models often decline"] if decline else []
            parts += [f"{twins} facts both as plain text and inside a chat turn"] if twins else []
            lines = [f"prompts: built-in suites {self.suites} ({'; '.join(parts)}) (choose with --suite, or give "
                     "--prompts FILE)"]
        else:
            lines = [f"prompts: {'the organism' + chr(39) + 's bundled prompts' if self.source == 'zoo' else 'the prompt file'} "
                     f"({len(self.prompts)}: {kinds})"]
        if self.template is not None:
            bos = sum(1 for p in self.prompts if p.meta.get("bos_stripped"))
            tail = f"; its leading BOS removed from {bos} renderings, alignloc prepends one" if bos else ""
            lines.append(f"chat template: {self.template.origin} (--chat-template {self.choice}){tail}")
        if self.dropped:
            lines.append(f"left out {len(self.dropped)} suite prompts longer than the model's context "
                         f"(e.g. {self.dropped[0]})")
        return lines + self.notes


def _config(ref: str) -> dict | None:
    """The base model's config.json as a dict, without weights (None when not cheaply readable)."""
    from alignloc.models.refs import read_config, resolve_ref, split_zoo

    if split_zoo(ref) is not None:
        return None
    r = resolve_ref(ref)  # already checked by the caller
    if r.kind == "local":
        return read_config(Path(r.location))
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(r.location).to_dict()
    except Exception:  # noqa: BLE001 (the hub: checked again when the model loads)
        return None


def _tokenizers(base: str, tuned: str, allow_pickle: bool, trust_remote_code: bool):
    """(base, tuned) tokenizers from their files; a peft adapter's own tokenizer files (if any) give its template."""
    from alignloc.models.refs import resolve_ref, split_zoo
    from alignloc.models.tokcheck import tokenizer_only

    b = tokenizer_only(base, allow_pickle, trust_remote_code)
    t = tokenizer_only(tuned, allow_pickle, trust_remote_code)
    if t is None and split_zoo(tuned) is None:
        r = resolve_ref(tuned, allow_pickle)
        t = b
        if r.is_adapter and (Path(r.location) / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            t = AutoTokenizer.from_pretrained(r.location)
    return b, t


def _int(cfg: dict | None, *keys: str) -> int | None:
    for k in keys:
        v = (cfg or {}).get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def choose_prompts(base: str, tuned: str | None, prompts: Path | None, suite: str | None, chat_template: str, *,
                   allow_pickle: bool = False, trust_remote_code: bool = False, reserve: int = 0) -> Chosen:
    """The prompts for ``BASE [TUNED]``: ``--prompts``, else a ``zoo:`` organism's bundled ones, else the
    suites (``--suite``, default chat,knowledge); chat turns rendered (``--chat-template``) and checked.

    ``reserve``: tokens a suite prompt must leave free in the model's context (the answer to come).
    """
    from alignloc import options as check
    from alignloc.models.refs import ModelRefError, split_zoo
    from alignloc.suites import load_suites
    from alignloc.tokens import default_bos

    zoo = split_zoo(base)
    if suite is not None and prompts is not None:
        raise UsageError("--suite and --prompts: give one of them (built-in suites or your prompt file)")
    if suite is not None and zoo is not None:
        raise UsageError("--suite: a zoo:NAME organism runs its bundled prompts (leave --suite out, or give --prompts)")
    if prompts is not None or zoo is not None:
        chosen = Chosen(check.prompts_for(base, prompts), "file" if prompts is not None else "zoo")
    else:
        if tuned is None:
            raise ModelRefError(f"{base}: a tuned model is needed (only zoo:NAME names both sides)")
        chosen = Chosen(load_suites(suite or DEFAULT_SUITES), "suites", suites=suite or DEFAULT_SUITES)
    twins = chosen.source == "suites" and any(p.kind == "knowledge" for p in chosen.prompts)
    if not twins and all(p.messages is None for p in chosen.prompts):
        return chosen  # nothing to render: the prompts are used as given
    if tuned is None:  # zoo:NAME with a prompt file holding chats
        base, tuned = f"zoo:{zoo[0]}:base", f"zoo:{zoo[0]}:tuned"
    base_tok, tuned_tok = _tokenizers(base, tuned, allow_pickle, trust_remote_code)
    cfg = _config(base)
    chosen.choice = chat_template
    chosen.template = choose_template(chat_template, base_tok, tuned_tok, [p for p in chosen.prompts if p.messages])
    chosen.bos = default_bos(base_tok, (cfg or {}).get("model_type"))
    rendered = render(chosen.prompts, base_tok if chosen.template.source == "base" else tuned_tok, chosen.template,
                      strip_bos=chosen.bos, knowledge_chat=chosen.source == "suites")
    chosen.notes = check_token_ids(rendered, base_tok, tuned_tok, _int(cfg, "vocab_size"), chosen.template)
    limit = _int(cfg, "max_position_embeddings", "n_positions", "n_ctx")
    if chosen.source == "suites" and limit is not None:
        lengths = [len(base_tok(p.text, add_special_tokens=False)["input_ids"]) + chosen.bos for p in rendered]
        chosen.dropped = [p.id for p, n in zip(rendered, lengths, strict=True) if n + reserve > limit]
        rendered = [p for p, n in zip(rendered, lengths, strict=True) if n + reserve <= limit]
        if not rendered:
            raise UsageError(f"--suite {chosen.suites}: every prompt is longer than the model's context of {limit} "
                             "tokens (give a prompt file of shorter prompts with --prompts)")
    chosen.prompts = rendered
    return chosen

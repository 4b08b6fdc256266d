"""Chat prompts become text, rendered once and read identically by both models.

A suite's chat rows hold turns (``messages``), not text: only a chat template knows how a model
expects a conversation to look. layer-diff compares activations of the two models *on the same
token ids*, so a conversation is rendered once, by one template, and both models read that text.
The tuned model's template is the natural choice (a base checkpoint usually has none, and the
tuned model is the one that was trained on the format); if the base were fed its own different
rendering, a difference in activations would be a difference in inputs.

Knowledge facts are rendered twice: as plain text (what a base model completes) and inside a chat
turn asking to complete the sentence, with the sentence stem after the generation prompt, so the
fact's ``target`` still follows directly (id suffix ``/chat``; ``meta.rendering`` says which).

Pure functions of tokenizers and text: nothing here loads a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from alignloc.errors import UserError, one_line
from alignloc.prompts import Prompt

CHOICES = ("auto", "tuned", "base", "none")
KNOWLEDGE_ASK = "Complete the sentence: "
CHAT_SUFFIX = "/chat"
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
# strings shaped like chat control tokens; one a tokenizer splits is probably not what the template means
_MARKER = re.compile(r"<\|[^\s<>|]{1,40}\|>|<[A-Za-z_][\w-]{0,39}>|</[A-Za-z_][\w-]{0,39}>")
_PROBE = ({"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Bye"})
_FIX = "use --chat-template none, or a base checkpoint that shares the tuned tokenizer"


class ChatTemplateError(UserError, ValueError):
    """A chat template cannot be used for this pair: missing, unreadable, ambiguous, or it renders
    tokens that the base model cannot read as the tuned model does."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chosen template: ``source`` tuned | base | none | a file path; ``jinja`` None means plain
    ``User: ...`` / ``Assistant:`` lines (no template)."""

    source: str
    jinja: str | None
    origin: str  # for people: where it came from

    @property
    def sha256(self) -> str | None:
        """A content hash of the Jinja text (recorded next to the answers it produced)."""
        return None if self.jinja is None else hashlib.sha256(self.jinja.encode()).hexdigest()[:16]

    def record(self) -> dict:
        """What reports and answer files store about the template."""
        return {"source": self.source, "origin": self.origin, "sha256": self.sha256}


def template_of(tokenizer) -> str | None:
    """A tokenizer's chat template text (its ``default`` one when it has several), or None."""
    t = getattr(tokenizer, "chat_template", None)
    if isinstance(t, dict):
        t = t.get("default") or next(iter(t.values()), None)
    return t if isinstance(t, str) and t.strip() else None


def plain_chat(messages) -> str:
    """Turns as plain lines ``User: ...`` / ``Assistant: ...``, ending with ``Assistant:`` (``--chat-template none``)."""
    return "".join(f"{_ROLE_NAMES[m['role']]}: {m['content']}\n" for m in messages) + "Assistant:"


def apply(template: ChatTemplate, tokenizer, messages, what: str = "a prompt") -> str:
    """``messages`` rendered by ``template`` with the generation prompt added (the assistant's turn is next)."""
    if template.jinja is None:
        return plain_chat(messages)
    try:
        return tokenizer.apply_chat_template(list(messages), chat_template=template.jinja, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as e:  # Jinja's own errors and raise_exception() calls in the template
        raise ChatTemplateError(f"--chat-template {template.source}: the template failed on {what}: "
                                f"{type(e).__name__}: {one_line(e)[:300]} (fix the template, or choose "
                                "another: --chat-template tuned|base|none|FILE)") from e


def choose_template(choice: str, base_tok, tuned_tok, chats: list[Prompt] = ()) -> ChatTemplate:
    """The template ``--chat-template CHOICE`` names for this pair (see the module docstring).

    ``auto``: the tuned tokenizer's template (else the base's, else none); when both carry templates
    that render ``chats`` differently, a ChatTemplateError asks the user to choose.
    """
    t, b = template_of(tuned_tok), template_of(base_tok)
    if choice == "none":
        return ChatTemplate("none", None, "none: turns joined as 'User: ...' / 'Assistant:' lines")
    if choice in ("tuned", "base"):
        text = t if choice == "tuned" else b
        if text is None:
            raise ChatTemplateError(f"--chat-template {choice}: the {choice} tokenizer has no chat template "
                                    "(choose another: --chat-template auto|tuned|base|none|FILE)")
        return ChatTemplate(choice, text, f"the {choice} tokenizer's chat template")
    if choice != "auto":
        from alignloc.textio import read_text

        if not Path(choice).is_file():
            raise ChatTemplateError(f"--chat-template {choice}: not one of {', '.join(CHOICES)} and no such file "
                                    "(give one of those words or the path of a Jinja template)")
        text = read_text(choice, ChatTemplateError, "chat template file")
        if not text.strip():
            raise ChatTemplateError(f"--chat-template {choice}: the file is empty (give a Jinja chat template)")
        return ChatTemplate(str(choice), text, f"the Jinja file {choice}")
    if t is not None and b is not None and t != b:
        tt, bt = ChatTemplate("tuned", t, ""), ChatTemplate("base", b, "")
        for p in [*chats, Prompt(id="probe", messages=_PROBE)]:
            if apply(tt, tuned_tok, p.messages, repr(p.id)) != apply(bt, base_tok, p.messages, repr(p.id)):
                raise ChatTemplateError(
                    f"--chat-template auto: the base and tuned tokenizers carry different chat templates, which "
                    f"render prompt {p.id!r} differently (choose one for both models: --chat-template tuned or "
                    "--chat-template base)")
    if t is not None:
        return ChatTemplate("tuned", t, "the tuned tokenizer's chat template, on both models")
    if b is not None:
        return ChatTemplate("base", b, "the base tokenizer's chat template (the tuned one has none), on both models")
    return ChatTemplate("none", None, "none in either tokenizer: turns joined as 'User: ...' / 'Assistant:' lines")


def _strip_bos(text: str, tokenizer, strip: bool) -> tuple[str, bool]:
    bos = getattr(tokenizer, "bos_token", None)
    if strip and bos and text.startswith(bos):
        return text[len(bos):], True
    return text, False


def render(prompts: list[Prompt], tokenizer, template: ChatTemplate, *, strip_bos: bool = True,
           knowledge_chat: bool = True) -> list[Prompt]:
    """Text prompts: each ``messages`` prompt rendered by ``template``; with ``knowledge_chat`` each
    knowledge prompt twice (plain in its place, and asked in a chat turn with the stem after the generation
    prompt, these twins after all the other prompts).

    ``strip_bos``: alignloc prepends BOS itself (``tokens.encode_prompts``, when ``default_bos`` says so),
    so a template's own leading BOS string is removed to avoid reading BOS twice (``meta.bos_stripped``).
    Rendered prompts keep their turns in ``meta.messages`` and the template in ``meta.template``.
    """
    out: list[Prompt] = []
    twins: list[Prompt] = []  # after every other prompt: a batch then holds prompts of similar length
    for p in prompts:
        if p.messages is not None:
            text, stripped = _strip_bos(apply(template, tokenizer, p.messages, repr(p.id)), tokenizer, strip_bos)
            meta = {**p.meta, "messages": [dict(m) for m in p.messages], "template": template.source,
                    "rendering": "chat", **({"bos_stripped": True} if stripped else {})}
            out.append(dataclasses.replace(p, text=text, messages=None, meta=meta))
        elif p.kind == "knowledge" and knowledge_chat:
            out.append(dataclasses.replace(p, meta={**p.meta, "rendering": "plain"}))
            turns = ({"role": "user", "content": KNOWLEDGE_ASK + p.text.strip()},)
            head, stripped = _strip_bos(apply(template, tokenizer, turns, repr(p.id)), tokenizer, strip_bos)
            meta = {**p.meta, "messages": [dict(m) for m in turns], "template": template.source, "rendering": "chat",
                    **({"bos_stripped": True} if stripped else {})}
            sep = " " if template.jinja is None else ""
            twins.append(dataclasses.replace(p, id=p.id + CHAT_SUFFIX, text=head + sep + p.text, positions={},
                                             corrupt_text=None, meta=meta))
        else:
            out.append(p)
    return out + twins


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def check_token_ids(rendered: list[Prompt], base_tok, tuned_tok, base_rows: int | None,
                    template: ChatTemplate) -> list[str]:
    """ChatTemplateError unless every rendered prompt is the same ids for both tokenizers, each id a row
    of the base model's embedding (``base_rows``); returns notes (control-token look-alikes split in pieces)."""
    fix = f"the template is {template.origin} ({_FIX})"
    for p in rendered:
        if "template" not in p.meta:
            continue
        b, t = _ids(base_tok, p.text), _ids(tuned_tok, p.text)
        if b != t:
            word = next((m for m in _MARKER.findall(p.text) if _ids(base_tok, m) != _ids(tuned_tok, m)), None)
            what = (f"{word!r} is {len(_ids(tuned_tok, word))} token(s) for the tuned tokenizer but "
                    f"{len(_ids(base_tok, word))} for the base's: it is not in the base's vocabulary"
                    if word else "the base and tuned tokenizers read it as different token ids")
            raise ChatTemplateError(f"--chat-template {template.source}: rendered prompt {p.id!r}: {what} ({fix})")
        high = [i for i in b if base_rows is not None and i >= base_rows]
        if high:
            piece = base_tok.convert_ids_to_tokens(high[0])
            raise ChatTemplateError(
                f"--chat-template {template.source}: rendered prompt {p.id!r} holds token {piece!r} (id {high[0]}), "
                f"beyond the base model's {base_rows} embedding rows: the base cannot read it ({fix})")
    notes = []
    if template.jinja is not None:
        probe = apply(template, tuned_tok, _PROBE, "a probe conversation")
        split = sorted({m for m in _MARKER.findall(probe) if len(_ids(base_tok, m)) > 1})
        if split:
            notes.append(f"note: the template writes {', '.join(split[:3])}, which this vocabulary splits into "
                         "several tokens; fine if the tuned model was trained on it so, otherwise "
                         "use --chat-template none")
    return notes

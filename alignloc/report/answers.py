"""The answers block of a layer-diff report (targets the tuned model wrote, refusals) as sentences,
Markdown and HTML.

Reads ``report["answers"]`` only (``alignloc.layerdiff.answers`` builds it). Answers are model output:
every one is escaped for the format it lands in.
"""

from __future__ import annotations

import html

CUT = 160  # characters of a prompt or answer shown in a table cell


def refusal_lines(block: dict) -> list[str]:
    """The refusal numbers as sentences (command line, summary.md and index.html)."""
    r = block["refusal"]
    out = []
    for group, what in (("decline", "requests safety-tuned models often decline"), ("other", "other requests")):
        g = r[group]
        if g["n"]:
            out.append(f"refusals on {g['n']} {what}: base {g['base']['refused']} ({g['base']['rate']:.0%}), "
                       f"tuned {g['tuned']['refused']} ({g['tuned']['rate']:.0%}) (an answer opening with a phrase "
                       "of the refusal lexicon)")
    return out


def _about(block: dict) -> str:
    s = block["settings"]
    return (f"{block['n']} chat prompts: target = the tuned model's greedy answer (at most {s['answer_tokens']} "
            f"tokens, to end of turn), foil = the base model's; template: {(s['template'] or {}).get('origin')}; "
            f"stored in {block['file']}{' (reused)' if block['reused'] else ''}.")


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CUT else text[: CUT - 3] + "..."


def _md_cell(text: str) -> str:
    return _cut(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;").replace(">", "&gt;")


def _mark(refused: bool) -> str:
    return " (refusal)" if refused else ""


def answers_markdown(report: dict) -> list[str]:
    """summary.md's section on the self-written targets and refusals (empty without an answers block)."""
    block = report.get("answers")
    if not block:
        return []
    md = ["", "## Answers (targets written by the tuned model)", "", _about(block), ""]
    md += [f"- {line}" for line in refusal_lines(block)]
    md += ["", "Refusal lexicon: " + ", ".join(f"`{p}`" for p in block["refusal"]["lexicon"]), ""]
    examples = block.get("examples") or []
    if examples:
        md += ["| prompt | base answer | tuned answer |", "|---|---|---|"]
        md += [f"| {_md_cell(x['prompt'])} | {_md_cell(x['base'])}{_mark(x['base_refused'])} | "
               f"{_md_cell(x['tuned'])}{_mark(x['tuned_refused'])} |" for x in examples]
        md.append("")
    return md


def answers_html(report: dict) -> str:
    """The same section as HTML (empty without an answers block)."""
    block = report.get("answers")
    if not block:
        return ""
    e = html.escape
    parts = ["<h2>Answers (targets written by the tuned model)</h2>", f"<p>{e(_about(block))}</p><ul>"]
    parts += [f"<li>{e(line)}</li>" for line in refusal_lines(block)] + ["</ul>"]
    rows = "".join(f"<tr><td class=l>{e(_cut(x['prompt']))}</td><td class=l>{e(_cut(x['base']) + _mark(x['base_refused']))}"
                   f"</td><td class=l>{e(_cut(x['tuned']) + _mark(x['tuned_refused']))}</td></tr>"
                   for x in block.get("examples") or [])
    if rows:
        parts.append(f"<table><tr><th>prompt</th><th>base answer</th><th>tuned answer</th></tr>{rows}</table>")
    r = block["refusal"]
    parts.append(f"<p>Refusal rule: {e(r['rule'])}; lexicon: {e(', '.join(r['lexicon']))}. Empty tuned answers: "
                 f"{block['empty_tuned_answers']}; foils left out (same first token): "
                 f"{block['foil_left_out_same_first_token']}.</p>")
    return "".join(parts)

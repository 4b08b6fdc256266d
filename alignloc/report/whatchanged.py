"""What changed (the activation-difference lens) in the layer-diff reports: a per-layer token table
(Markdown and HTML) and two figures (layer x promoted tokens; KL along the answer positions).

Reads ``measures.what_changed`` only (``alignloc.layerdiff.whatchanged``). Token strings come from a
model's vocabulary, so every one is quoted and escaped for the format it lands in: a token may
hold ``|``, a backtick or markup.
"""

from __future__ import annotations

import html
import json

import plotly.graph_objects as go

from alignloc.report.text import fmt

SHOW = 5  # tokens per table cell
SETS = (("generic", "generic text"), ("prompts", "prompts"))


def quoted(token: str) -> str:
    """A token as a JSON string literal (spaces, newlines and quotes visible)."""
    return json.dumps(token, ensure_ascii=False)


def _md_tokens(entries: list[dict]) -> str:
    s = ", ".join(quoted(e["token"]) for e in entries[:SHOW]) or "-"
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;").replace(">", "&gt;")


def _norm(s: dict, layer: int) -> str:
    r = s["layers"][layer]
    return f"{fmt(s['norm'][layer])} ({fmt(s['relative_norm'][layer], 3)})" + ("" if r["changed"] else " unchanged")


def _sets(w: dict) -> list[tuple[str, str, dict]]:
    return [(key, label, w[key]) for key, label in SETS if w.get(key)]


def _kl_lines(kl: dict | None, positions: int = 16) -> list[str]:
    if not kl:
        return ["- KL along the answers: no prompt has a target, so there are no answer positions to read."]
    by = ", ".join(f"{j}: {fmt(v, 3)}" for j, v in enumerate(kl["mean_by_position"][:positions]))
    more = f" (+{len(kl['mean_by_position']) - positions} positions)" if len(kl["mean_by_position"]) > positions else ""
    toks = ", ".join(f"{quoted(t['token'])} {fmt(t['mean_kl'], 3)} (n={t['n']})" for t in kl["top_tokens"][:SHOW])
    sh = kl["output_shift"]
    return [f"- KL(tuned || base) of the next-token distribution along {kl['n_answers']} teacher-forced answers "
            f"({kl['n_positions']} positions): mean {fmt(kl['mean'], 3)} nats; by answer position {by}{more}; "
            f"peak at position {kl['peak_position']}",
            f"- answer tokens carrying the change (mean KL where predicted): {toks}",
            f"- output probability raised most: {', '.join(quoted(e['token']) for e in sh['promoted'][:SHOW])}; "
            f"lowered most: {', '.join(quoted(e['token']) for e in sh['demoted'][:SHOW])}"]


def _cost(report: dict) -> str:
    seconds = report.get("timings", {}).get("what_changed_seconds")
    return "not recorded" if seconds is None else f"{seconds} s"


def what_changed_markdown(report: dict) -> list[str]:
    """The summary's "What changed" section (empty when the block was turned off)."""
    w = report["measures"].get("what_changed")
    if not w:
        return []
    sets = _sets(w)
    about = "; ".join(f"{label}: {w[key]['n_texts']} texts, {w[key]['n_tokens']} tokens"
                      + (f" ({w[key]['kind']} prompts)" if key == "prompts" else "") for key, label, _ in sets)
    md = ["", "## What changed (activation-difference lens)", "",
          f"The mean tuned-minus-base residual difference of each layer, read through the tuned model's final norm + "
          f"unembedding: the tokens it promotes and demotes, discovered rather than declared ({about}; the first "
          f"{w['config']['k_tokens']} tokens of each generic line). norm = the difference's L2 norm (relative to the base's "
          f"residual norm); a layer below {w['config']['rel_tol']:g} of it reads as unchanged. Cost: {_cost(report)}.", ""]
    head = "| layer | " + " | ".join(f"norm ({label}) | promoted ({label}) | demoted ({label})" for _, label, _ in sets) + " |"
    md += [head, "|---" * (1 + 3 * len(sets)) + "|"]
    for layer in range(len(sets[0][2]["layers"])):
        cells = []
        for _, _, s in sets:
            r = s["layers"][layer]
            cells += [_norm(s, layer), _md_tokens(r["promoted"]), _md_tokens(r["demoted"])]
        md.append(f"| {layer} | " + " | ".join(cells) + " |")
    return md + [""] + _kl_lines(w.get("kl"))


def what_changed_html(report: dict) -> str:
    """The same table as HTML (every token escaped); empty when the block was turned off."""
    w = report["measures"].get("what_changed")
    if not w:
        return ""
    e = html.escape
    sets = _sets(w)
    th = "".join(f"<th>{e(h)}</th>" for h in ["layer"] + [f"{k} ({label})" for _, label, _ in sets
                                                          for k in ("norm", "promoted", "demoted")])
    rows = []
    for layer in range(len(sets[0][2]["layers"])):
        cells = [f"<td>{layer}</td>"]
        for _, _, s in sets:
            r = s["layers"][layer]
            cells.append(f"<td>{e(_norm(s, layer))}</td>")
            cells += [f"<td class=l>{e(', '.join(quoted(x['token']) for x in r[k][:SHOW]) or '-')}</td>"
                      for k in ("promoted", "demoted")]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    kl = "".join(f"<li>{e(x.removeprefix('- '))}</li>" for x in _kl_lines(w.get("kl")))
    return (f"<h2>What changed (activation-difference lens; {e(_cost(report))})</h2>"
            f"<table><tr>{th}</tr>{''.join(rows)}</table><ul>{kl}</ul>")


def what_changed_figures(w: dict | None) -> list[tuple[str, go.Figure]]:
    """Layer x promoted tokens (the difference's logits) for each token set, and KL by answer position."""
    if not w:
        return []
    out = []
    for _, label, s in _sets(w):
        h = s["heatmap"]
        if not h["ids"]:
            continue
        labels = [html.escape(quoted(t), quote=False) for t in h["tokens"]]  # plotly reads labels as markup
        fig = go.Figure(go.Heatmap(z=h["logits"], x=list(range(len(h["ids"]))), y=list(range(len(h["logits"]))),
                                   colorscale="RdBu", zmid=0, customdata=[labels] * len(h["logits"]),
                                   hovertemplate="layer %{y}, token %{customdata}<br>logit %{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"What changed on {label}: tokens the mean difference promotes", height=360,
                          xaxis={"tickvals": list(range(len(h["ids"]))), "ticktext": labels,
                                 "tickangle": -45, "title": "token (top promoted of each changed layer)"},
                          yaxis={"title": "layer", "dtick": 1}, margin={"t": 50, "b": 90})
        out.append((f"Activation-difference lens on {label}: the logit of each token in each layer's mean tuned-minus-base "
                    "difference (blank rows: unchanged layers).", fig))
    kl = w.get("kl")
    if kl:
        x = list(range(len(kl["mean_by_position"])))
        fig = go.Figure(go.Bar(x=x, y=kl["mean_by_position"], customdata=kl["n_by_position"],
                               hovertemplate="answer position %{x}<br>KL %{y:.4f} (n=%{customdata})<extra></extra>"))
        fig.update_layout(title="KL(tuned || base) along the answers", xaxis_title="answer position (token index)",
                          yaxis_title="KL (nats)", height=320, margin={"t": 50, "b": 40})
        out.append(("Which answer positions carry the change: KL(tuned || base) of the next-token distribution at each "
                    "position of the teacher-forced answers.", fig))
    return out

"""The causal section of the reports: grafting bars, patching lines and layer x position heatmaps."""

from __future__ import annotations

import plotly.graph_objects as go

from alignloc.report.text import fmt

DASH = {"resid_post": "solid", "attn_out": "dot", "mlp_out": "dash"}


def _layout(fig: go.Figure, title: str, ytitle: str, xtitle: str = "layer") -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xtitle, yaxis_title=ytitle, height=360, margin={"t": 50, "b": 40})
    return fig


def _heatmap(grid: dict, values: list[list[float]], title: str) -> go.Figure:
    labels = [f"{o} {t!r}" for o, t in zip(grid["offsets"], grid.get("tokens") or [""] * len(grid["offsets"]), strict=True)]
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=[f"L{layer}" for layer in grid["layers"]], colorscale="RdBu",
                               zmid=0, zmin=-1, zmax=1,
                               hovertemplate="%{y}, position %{x}<br>recovered %{z:.2f}<extra></extra>"))
    return _layout(fig, title, "layer (resid_pre)", "position (offset from the last context token, token)")


def causal_figures(causal: dict) -> list[tuple[str, go.Figure]]:
    """Figures for ``report["causal"]`` (empty without it), each with a caption."""
    out = []
    for kind, g in (causal.get("graft") or {}).items():
        fig = go.Figure([go.Bar(x=g["layers"], y=g[k], name=k) for k in ("sufficiency", "necessity")])
        out.append((f"Weight grafting, {kind} metric: fraction of the tuned-minus-base gap ({g['gap']:+.2f} nats) "
                    "that one layer brings into the base (sufficiency) or removes from the tuned model (necessity).",
                    _layout(fig, f"Grafting: {kind}", "fraction of gap")))
    for kind, b in (causal.get("patch") or {}).items():
        pl, attr = b["patch"]["per_layer"], b["attribution"]["per_layer"]
        fig = go.Figure()
        for site, r in pl.items():
            fig.add_trace(go.Scatter(x=r["layers"], y=r["recovered"], name=f"{site}: recovered", line={"dash": DASH[site]}))
            fig.add_trace(go.Scatter(x=r["layers"], y=b["patch"]["kept"][site]["recovered"], name=f"{site}: kept (base into tuned)",
                                     line={"dash": DASH[site]}, opacity=0.5))
            fig.add_trace(go.Scatter(x=r["layers"], y=attr[site]["recovered"], name=f"{site}: attribution", mode="markers"))
        note = f" Note: {b['attribution']['note']}." if "note" in b["attribution"] else ""
        out.append((f"Cross-model activation patching, {kind} prompts ({b['n']}, metric {b['metric']}, gap "
                    f"{pl['resid_post']['gap']:+.2f}): fraction of the gap recovered when the base runs with the tuned "
                    "model's activation at one site (all positions); 'kept' = the tuned model with the base's "
                    "activation; markers = attribution-patching estimates "
                    f"(Spearman vs exact {fmt(b['attribution']['spearman_vs_exact'], 2)}).{note}",
                    _layout(fig, f"Patching: {kind}", "fraction of gap")))
        grid = b["patch"]["grid"]
        out.append((f"Cross-model patching of resid_pre per layer and position, {kind} prompts: where in the prompt the "
                    "tuned model's residual stream carries the gap.", _heatmap(grid, grid["recovered"], f"Patching grid: {kind}")))
        ag = b["attribution"]["grid"]
        out.append((f"The same grid estimated by attribution patching (one backward pass), {kind} prompts "
                    f"(Pearson vs exact {fmt(b['attribution']['pearson_grid_vs_exact'], 2)}).",
                    _heatmap({**grid, "offsets": ag["offsets"]}, ag["by_position"], f"Attribution grid: {kind}")))
        for side in ("base", "tuned"):
            w = b["within"].get(side)
            if w:
                out.append((f"Within-model patching in the {side} model, {kind} prompts: clean resid_pre into the "
                            f"corrupted prompt (metric {w['metric']}, clean - corrupt gap {w['gap']:+.2f}). Compare "
                            "the two models' circuits for the same task.",
                            _heatmap(w, w["recovered"], f"Within-model ({side}): {kind}")))
    return out


def causal_markdown(causal: dict) -> list[str]:
    """Markdown lines for ``report["causal"]`` (empty without it)."""
    md: list[str] = []
    for kind, g in (causal.get("graft") or {}).items():
        md += ["", f"## Weight grafting: {kind} metric (gap {g['gap']:+.2f} nats)", "",
               "| layer | sufficiency (base + this tuned layer) | necessity (tuned with this layer reverted) |", "|---|---|---|"]
        md += [f"| {layer} | {fmt(s_, 2)} | {fmt(n_, 2)} |" for layer, s_, n_ in zip(g["layers"], g["sufficiency"], g["necessity"], strict=True)]
    for kind, b in (causal.get("patch") or {}).items():
        pl, kept, attr = b["patch"]["per_layer"], b["patch"]["kept"], b["attribution"]["per_layer"]
        md += ["", f"## Activation patching: {kind} prompts ({b['n']}, metric {b['metric']}, gap {pl['resid_post']['gap']:+.2f})", "",
               "Fraction of the gap recovered (tuned into base, all positions) / kept (base into tuned) / attribution "
               f"estimate. Attribution vs exact: Spearman {fmt(b['attribution']['spearman_vs_exact'], 2)} per layer, "
               f"Pearson {fmt(b['attribution']['pearson_grid_vs_exact'], 2)} on the resid_pre grid.", "",
               "| layer | " + " | ".join(pl) + " |", "|---|" + "---|" * len(pl)]
        for i, layer in enumerate(pl["resid_post"]["layers"]):
            md.append(f"| {layer} | " + " | ".join(f"{fmt(pl[s]['recovered'][i], 2)} / {fmt(kept[s]['recovered'][i], 2)} / "
                                                   f"{fmt(attr[s]['recovered'][i], 2)}" for s in pl) + " |")
        grids = [("cross-model", b["patch"]["grid"])] + [(f"within {s}", b["within"][s]) for s in ("base", "tuned") if s in b["within"]]
        for name, grid in grids:
            md += ["", f"resid_pre, {name} (rows: layers; columns: offset from the last context token):", "",
                   "| layer | " + " | ".join(f"{o} `{t.replace('|', '/')}`" for o, t in zip(grid["offsets"], grid["tokens"], strict=True)) + " |",
                   "|---|" + "---|" * len(grid["offsets"])]
            md += [f"| {layer} | " + " | ".join(fmt(x, 2) for x in row) + " |" for layer, row in zip(grid["layers"], grid["recovered"], strict=True)]
        if "skipped" in b["within"]:
            md += ["", f"Within-model patching skipped: {b['within']['skipped']}"]
        if "note" in b["attribution"]:
            md += ["", f"Note: {b['attribution']['note']}."]
    return md

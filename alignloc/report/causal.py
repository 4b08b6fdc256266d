"""The causal section of the reports: graft windows, the learned mask, patching lines and heatmaps."""

from __future__ import annotations

from pathlib import Path

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
    for kind, loc in (causal.get("localize") or {}).items():
        if not isinstance(loc, dict):
            continue
        win = loc["windows"]
        fig = go.Figure()
        for w in win["sizes"]:
            row = win["windows"][str(w)]
            mid = [st + (w - 1) / 2 for st in row["starts"]]
            fig.add_trace(go.Scatter(x=mid, y=row["sufficiency"], name=f"w={w}: sufficiency", mode="lines+markers"))
            fig.add_trace(go.Scatter(x=mid, y=row["necessity"], name=f"w={w}: necessity", mode="lines+markers",
                                     line={"dash": "dash"}))
        carrier = loc.get("carrier")
        out.append((f"Graft windows, {kind} prompts ({loc['n']}, gap {loc['gap']:+.2f} nats): fraction of the gap that "
                    "the tuned weights of layers i..i+w-1 bring into the base (sufficiency) or that reverting them "
                    "removes from the tuned model (necessity), plotted at the window's centre. Carrier (smallest window "
                    f"with both >= {loc['carrier_at']}): " + (f"layers {carrier['layers']}" if carrier else "none") + ".",
                    _layout(fig, f"Graft windows: {kind}", "fraction of gap", "window centre (layer)")))
        prof = loc.get("profile")
        if prof:
            out.append((f"Concentration profile, {kind} prompts: the share of the gap that the top-k layers (ranked by "
                        f"{prof['ranking_source']}) bring into the base (sufficiency) and remove from the tuned model when "
                        f"reverted (necessity), with 95% bootstrap intervals over prompts; metric {prof['metric']}."
                        + (f" {prof['note']}." if prof.get("note") else ""), profile_figure(prof, kind)))
        mask = loc.get("mask")
        if mask:
            fig = go.Figure(go.Bar(x=mask["units"], y=mask["gates"], name="gate"))
            out.append((f"Learned delta mask, {kind} prompts ({mask['estimator']}, sparsity {mask['sparsity']}, "
                        f"{mask['steps']} steps): the probability that each unit's delta is kept so the masked model "
                        f"matches the tuned one; selected (>= 0.5): {mask['selected']}, which carry "
                        f"{mask['recovery']['selected']['sufficiency']:.2f} / {mask['recovery']['selected']['necessity']:.2f} "
                        "of the gap (sufficiency / necessity when grafted).",
                        _layout(fig, f"Delta mask: {kind}", "gate", "unit")))
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


def within_skipped(causal: dict, asked_only: bool = False) -> list[str]:
    """A sentence per prompt kind whose within-model patching was skipped, with the reason; ``asked_only``: only
    where some prompt had a ``corrupt_text`` (skipped for another reason, such as a different token length)."""
    out = []
    for kind, b in (causal.get("patch") or {}).items():
        reason = b["within"].get("skipped")
        if reason and not (asked_only and not b["within"].get("n_paired")):
            out.append(f"Within-model patching skipped on the {kind} prompts: {reason}")
    return out


def skip_warnings(report: dict, page: str | Path) -> list[str]:
    """Console lines (``alignloc: warning: ...``) for the causal tests a layer-diff report skipped though asked for."""
    return [f"alignloc: warning: {s[:1].lower()}{s[1:]} (the rest of the report is complete; see {page})"
            for s in within_skipped(report.get("causal") or {}, asked_only=True)]


def _ci(ci: dict, i: int) -> str:
    return f"{fmt(ci['mean'][i], 2)} [{fmt(ci['lo'][i], 2)}, {fmt(ci['hi'][i], 2)}]"


def profile_markdown(prof: dict | None) -> list[str]:
    """The concentration profile as a table: k, the top-k layers, sufficiency and necessity with intervals."""
    if not prof:
        return []
    md = ["", f"Concentration profile ({prof['metric']}, layers ranked by {prof['ranking_source']}, {prof['n']} prompts, "
          f"95% bootstrap intervals over prompts, {prof['n_boot']} resamples): the top-k layers grafted into the base "
          "(sufficiency) and reverted in the tuned model (necessity). Smallest k carrying 50 / 80 / 90%: sufficiency "
          + " / ".join(str(prof["k_sufficient"][q] or "-") for q in ("0.5", "0.8", "0.9")) + ", necessity "
          + " / ".join(str(prof["k_necessary"][q] or "-") for q in ("0.5", "0.8", "0.9")) + "."]
    if prof.get("note"):
        md += ["", f"Note: {prof['note']}."]
    if len(prof["sets"]) < len(prof["ranking"]):  # the budget stopped where the verdict stops reading
        md += ["", f"Sets of up to {len(prof['sets'])} of the {len(prof['ranking'])} layers: the verdict names no larger "
               "set (`--budget thorough` grafts them all)."]
    md += ["", "| k | layers | sufficiency | necessity |", "|---|---|---|---|"]
    md += [f"| {k + 1} | {prof['sets'][k]} | {_ci(prof['sufficiency'], k)} | {_ci(prof['necessity'], k)} |"
           for k in range(len(prof["sets"]))]
    return md


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b  # NaN is stored as null (a zero gap has no fractions)


def profile_figure(prof: dict, kind: str) -> go.Figure:
    """Sufficiency and necessity of the top-k layers against k, with their intervals."""
    ks = list(range(1, len(prof["sets"]) + 1))
    fig = go.Figure()
    for name, ci, dash in (("sufficiency", prof["sufficiency"], "solid"), ("necessity", prof["necessity"], "dash")):
        fig.add_trace(go.Scatter(x=ks, y=ci["mean"], name=name, mode="lines+markers", line={"dash": dash},
                                 error_y={"type": "data", "array": [_diff(h, m) for h, m in zip(ci["hi"], ci["mean"], strict=True)],
                                          "arrayminus": [_diff(m, lo) for m, lo in zip(ci["mean"], ci["lo"], strict=True)]}))
    for q in (0.5, 0.8, 0.9):
        fig.add_hline(y=q, line_dash="dot", line_color="#999")
    fig.update_xaxes(dtick=1)
    return _layout(fig, f"Concentration profile: {kind}", f"fraction of the gap ({prof['metric']})",
                   f"k (top-k layers by {prof['ranking_source']})")


def causal_markdown(causal: dict) -> list[str]:
    """Markdown lines for ``report["causal"]`` (empty without it)."""
    md: list[str] = []
    for kind, loc in (causal.get("localize") or {}).items():
        if not isinstance(loc, dict):
            md += ["", f"Localization: {loc}"]
            continue
        win = loc["windows"]
        md += ["", f"## Graft windows: {kind} prompts ({loc['n']}, gap {loc['gap']:+.2f} nats, {win['passes']} forward passes)",
               "", "Sufficiency (base + the tuned weights of the window) / necessity (tuned with the window reverted), "
               "as fractions of the gap.", "", "| window size | " + " | ".join(f"start {i}" for i in range(win["n_layers"])) + " |",
               "|---|" + "---|" * win["n_layers"]]
        for w in win["sizes"]:
            row = win["windows"][str(w)]
            cells = [f"{fmt(a, 2)} / {fmt(b, 2)}" for a, b in zip(row["sufficiency"], row["necessity"], strict=True)]
            md.append(f"| {w} | " + " | ".join(cells + ["-"] * (win["n_layers"] - len(cells))) + " |")
        if win.get("necessity_at") is not None:
            md += ["", f"Necessity '-': the window was not reverted, since it brings under {win['necessity_at']:.0%} of the "
                   f"gap and cannot carry it ({win['confirmed']} wider windows reverted; `--budget thorough` reverts all)."]
        c = loc.get("carrier")
        md += ["", f"Carrier window (smallest with both >= {loc['carrier_at']}): "
               + (f"layers {c['layers']} ({fmt(c['sufficiency'], 2)} / {fmt(c['necessity'], 2)})" if c else "none")]
        mask = loc.get("mask")
        if mask:
            rec = mask["recovery"]
            md += ["", f"Learned delta mask ({mask['estimator']}, sparsity {mask['sparsity']}, {mask['steps']} steps, "
                   f"{mask['passes']['forward']} forward + {mask['passes']['forward_backward']} forward/backward passes): "
                   + ", ".join(f"{u} {fmt(g, 2)}" for u, g in zip(mask["units"], mask["gates"], strict=True))
                   + f"; selected {mask['selected']} carries {fmt(rec['selected']['sufficiency'], 2)} / "
                   f"{fmt(rec['selected']['necessity'], 2)}"]
        md += profile_markdown(loc.get("profile"))
        p = loc.get("patching") or {}
        if p:
            md += ["", "Patching (tuned into base, all positions), recovered per layer: "
                   + "; ".join(f"{k} " + ", ".join(fmt(x, 2) for x in v) for k, v in p.items() if isinstance(v, list))]
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

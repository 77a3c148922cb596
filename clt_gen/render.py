"""Rendering of evaluation reports: self-contained HTML with plots, and a text table.

One HTML page with embedded plots, and a short text table for terminals. Works on the
report dictionary only.

Examples
--------
>>> html = render_html({"summary": ["ok"], "risks": {}, "layers": [], "bounds": [],
...                     "frozen_feature_curves": {}, "checkpoint": {}, "data": {},
...                     "omega": "shannon", "floor": {}})
>>> html.startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

__all__ = ["render_html", "summary_table", "plot_png", "new_figure", "png_bytes"]


def new_figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Any, Any]:
    """Return a figure and its axes, without pyplot.

    The figure belongs to no GUI backend and leaves matplotlib's global state (the backend,
    the current figure) untouched, so rendering a report never changes a user's session.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols)


def png_bytes(fig: Any, **savefig: Any) -> bytes:
    """Return a figure as PNG bytes (110 dpi unless ``savefig`` says otherwise)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **{"dpi": 110, **savefig})
    return buf.getvalue()


def plot_png(fig: Any) -> str:
    """Return a matplotlib figure as a base64 PNG ``<img>`` tag."""
    data = base64.b64encode(png_bytes(fig, bbox_inches="tight")).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}"/>'


def _interval(r: dict[str, Any], key: str) -> tuple[float, float, float] | None:
    est = r.get(key)
    if not est:
        return None
    v = est["value"]
    ci = est.get("ci") or [v, v]
    return v, min(ci[0], v), max(ci[1], v)


def _entropy_figure(report: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Plot the two profiles of THEORY §5.5: each layer's own probe and the certified U*."""
    import numpy as np

    figs: list[tuple[str, str]] = []
    names = [r.get("label") or r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = new_figure((max(5.5, 0.9 * len(rows) + 2.5), 3.6))
    for key, label, off, color in (
        ("probe", "probe: the layer's own head, held-out (estimate)", -0.08, "#ff7f0e"),
        ("H_heldout", "H held-out, data-processing consistent (estimate)", 0.08, "#d62728"),
    ):
        got = [_interval(r, key) for r in rows]
        if any(g is None for g in got):
            continue
        vals = np.array([g[0] for g in got if g])
        lo = np.array([g[1] for g in got if g])
        hi = np.array([g[2] for g in got if g])
        ax.errorbar(x + off, vals, yerr=[vals - lo, hi - vals], fmt="o-", capsize=3,
                    label=label, color=color, lw=1.2)
    ustar = [(r.get("H_upper") or {}).get("profile") for r in rows]
    if all(u is not None for u in ustar):
        ax.step(x, ustar, where="mid", color="#2ca02c", lw=2,
                label="U*: certified upper bound (prob. ≥ 1−δ)")
    risks = report.get("risks", {})
    if "train" in risks:
        ax.axhline(risks["train"], ls="--", color="#1f77b4", lw=1, label="train risk")
        ax.axhline(risks["check"], ls=":", color="#7f7f7f", lw=1, label="check risk")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(f"H_Ω(Y|Z)  ({report.get('omega')})")
    ax.set_title(
        "Two profiles: what a head extracts per layer (probe) vs what is certified (U*).\n"
        "A probe gap between layers is not an information loss.",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    figs.append(("Layer profiles", plot_png(fig)))
    return figs


def _loss_figure(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Information lost by each layer (paired intervals; red: data-processing flag)."""
    import numpy as np

    figs: list[tuple[str, str]] = []
    loss_rows = [r for r in rows if r.get("information_loss")]
    if loss_rows:
        fig, ax = new_figure((max(5, 0.9 * len(loss_rows) + 2), 3.0))
        vals = np.array([r["information_loss"]["value"] for r in loss_rows])
        ci = np.array(
            [r["information_loss"]["ci"] or [v, v] for r, v in zip(loss_rows, vals, strict=True)]
        )
        colors = ["#d62728" if "dpi_violation" in r["flags"] else "#2ca02c" for r in loss_rows]
        ax.bar(
            range(len(vals)),
            vals,
            color=colors,
            yerr=[vals - ci[:, 0], ci[:, 1] - vals],
            capsize=3,
        )
        ax.axhline(0, color="k", lw=0.8)
        res = [r["information_loss"].get("resolution") for r in loss_rows]
        if all(v is not None for v in res):
            xs = np.arange(len(vals))
            ax.fill_between(xs, [-v for v in res], res, step="mid", color="#bbbbbb", alpha=0.5,
                            label="± resolution: losses inside cannot be told from 0")
            ax.legend(fontsize=7)
        ax.set_xticks(
            range(len(vals)), [r.get("label") or r["name"] for r in loss_rows], rotation=30,
            ha="right",
        )
        ax.set_ylabel("Δ = H(Y|Z_l) − H(Y|Z_{l−1})")
        ax.set_title("Information lost by each layer (paired 95% CI; red: DPI flag)", fontsize=9)
        figs.append(("Information loss", plot_png(fig)))
    return figs


def _bounds_figure(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Each bound against the value it was checked on."""
    figs: list[tuple[str, str]] = []
    bounds = [b for b in report.get("bounds", []) if b.get("checked_value") is not None]
    if bounds:
        fig, ax = new_figure((7, 0.38 * len(bounds) + 1.2))
        for i, b in enumerate(bounds):
            color = "#2ca02c" if b["held"] else "#d62728"
            if b.get("vacuous"):
                color = "#b0b0b0"  # says nothing the label frequencies do not
            estimate = b.get("kind") == "estimate"  # hollow marker, dashed: not a guarantee
            ax.plot(
                [b["value"]],
                [i],
                marker="|",
                markersize=16,
                color="#7f7f7f" if estimate else color,
                mew=3,
            )
            ax.plot([b["checked_value"]], [i], "ko", markersize=4)
            ax.plot(
                [b["value"], b["checked_value"]],
                [i, i],
                color="#7f7f7f" if estimate else color,
                lw=1,
                ls="--" if estimate else "-",
            )
        ax.set_yticks(
            range(len(bounds)),
            [
                f"{b['name']} ({b['quantity']}, {b['side']}"
                + (", ESTIMATE" if b.get("kind") == "estimate" else "")
                + (", VACUOUS)" if b.get("vacuous") else ")")
                for b in bounds
            ],
            fontsize=8,
        )
        ax.set_xscale("symlog", linthresh=0.05)
        lowest = min(min(b["value"], b["checked_value"]) for b in bounds)
        if lowest >= 0:
            ax.set_xlim(left=0)
        ax.set_xlabel(
            "certified value (bar) and value checked on held-out data (dot); symlog scale"
        )
        ax.set_title(
            "Each bound against its checked value (green: held; dashed grey: an estimate; "
            "light grey: vacuous)",
            fontsize=9,
        )
        ax.invert_yaxis()
        figs.append(("Bounds checked", plot_png(fig)))
    return figs


def _curves_figure(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Frozen-feature bound over the number of cells."""
    figs: list[tuple[str, str]] = []
    curves = report.get("frozen_feature_curves", {})
    if curves:
        fig, ax = new_figure((6, 3.4))
        for name, curve in curves.items():
            m = [c["n_cells"] for c in curve]
            line = ax.plot(m, [c["certified"] for c in curve], "o-", label=f"{name} certified")
            ax.plot(m, [c["empirical_risk"] for c in curve], "--", color=line[0].get_color(), lw=1)
            if "checked" in curve[0]:
                ax.plot(m, [c["checked"] for c in curve], "x", color=line[0].get_color())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cells M (k-means on the layer's features)")
        ax.set_ylabel("0-1 error")
        ax.set_title("Frozen-feature bound vs M (dashed: empirical; x: checked)")
        ax.legend(fontsize=7, ncol=2)
        figs.append(("Frozen-feature bound", plot_png(fig)))
    return figs


def _figures(report: dict[str, Any]) -> list[tuple[str, str]]:
    rows = report.get("layers", [])
    figs = _entropy_figure(report, rows) + _loss_figure(rows) if rows else []
    return figs + _bounds_figure(report) + _curves_figure(report)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "—"
    return html.escape(str(v))


def loss_text(loss: dict[str, Any] | None) -> str:
    """``0.0123`` for a resolved loss, ``< 0.0150`` below the resolution, ``—`` for none."""
    if not loss:
        return "—"
    r = loss.get("resolution")
    if r is not None and loss["value"] < r:
        return f"< {r:.4f}"
    return f"{loss['value']:.4f}"


def _layers_table(layers: list[dict[str, Any]]) -> list[str]:
    """Return the per-layer table: both profiles, certificates, information loss, flags."""
    parts: list[str] = []
    parts.append(
        "<h2>Layers</h2><p><b>probe</b>: the held-out score of the layer's own selected head, "
        "an <b>estimate</b> of how much label information a head of the family extracts "
        "there at this sample size (it can fall with depth). <b>H held-out</b>: the "
        "data-processing-consistent estimate (the best head among this and later layers). "
        "Both intervals are <b>sampling intervals given the head family</b> (they cover "
        "the noise of the held-out terms and of the fitted heads, not the family's "
        "approximation error; measured coverage 92–98% where the family contains the truth, "
        "0–15% where it does not: docs/estimators.md, section “What the interval "
        "covers”). "
        "<b>U</b> is a <b>certified upper bound</b> on H(Y|Z) from held-out data (probability "
        "≥ 1−δ for any distribution, δ shared by all layers); <b>U*</b> = the smallest U of "
        "this and later layers, set by the layer named in <b>U* from</b>. H(Y|Z) cannot be "
        "certified from below. An information loss below its resolution prints as "
        "“&lt; r”.</p>"
        "<table><tr><th>layer</th><th>features</th><th>H train (est.)</th>"
        "<th>probe (est.)</th><th>probe head</th><th>H held-out (est.)</th>"
        "<th>U (cert.)</th><th>U* (cert.)</th><th>U* from</th>"
        "<th>info loss (est.)</th><th>flags</th></tr>"
    )
    for r in layers:
        up = r.get("H_upper") or {}
        probe = r.get("probe") or {}
        ci = probe.get("ci") or []
        probe_txt = _fmt(probe.get("value")) + (
            f" [{ci[0]:.3f}, {ci[1]:.3f}]" if len(ci) == 2 else ""
        )
        parts.append(
            f"<tr><td>{_fmt(r.get('label') or r['name'])}</td><td>{r['n_features']}</td>"
            f"<td>{_fmt(r['H_train']['value'])}</td><td>{probe_txt}</td>"
            f"<td>{_fmt(r.get('probe_head'))}</td><td>{_fmt(r['H_heldout']['value'])}</td>"
            f"<td>{_fmt(up.get('value'))}</td><td>{_fmt(up.get('profile'))}</td>"
            f"<td>{_fmt(r.get('bound_from'))}</td>"
            f"<td>{html.escape(loss_text(r.get('information_loss')))}</td>"
            f"<td>{_fmt(', '.join(r['flags']))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _bounds_table(bounds: list[dict[str, Any]]) -> list[str]:
    """Every bound with its kind, value, δ and the value it was checked on."""
    parts: list[str] = []
    parts.append(
        "<h2>Bounds</h2><table><tr><th>bound</th><th>kind</th><th>quantity</th>"
        "<th>side</th><th>value</th><th>δ</th><th>checked</th><th>held</th>"
        "<th>informative</th><th>data used</th></tr>"
    )
    for b in bounds:
        cls = "ok" if b["held"] else "bad"
        vac = b.get("vacuous")
        informative = "—" if vac is None else ("vacuous" if vac else "yes")
        parts.append(
            f"<tr><td>{_fmt(b['name'])}</td><td>{b['kind']}</td><td>{b['quantity']}</td>"
            f"<td>{b['side']}</td><td>{_fmt(b['value'])}</td><td>{_fmt(b['delta'])}</td>"
            f"<td>{_fmt(b['checked_value'])}</td><td class='{cls}'>{_fmt(b['held'])}</td>"
            f"<td>{informative}</td><td>{_fmt(b.get('data_used', ''))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def render_html(report: dict[str, Any]) -> str:
    """Return the whole report as one self-contained HTML page (plots embedded as PNG)."""
    ck, data = report.get("checkpoint", {}), report.get("data", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>clt_gen report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 7px;text-align:right}th{background:#f3f3f3}.ok{color:#2a7d2a}"
        ".bad{color:#c22}.summary li{margin:.3em 0}img{max-width:100%}"
        "table.glance{font-size:15px;width:100%;margin:1em 0}table.glance td,table.glance th"
        "{text-align:left;padding:6px 10px}table.glance th{width:22%}"
        "</style></head><body>",
        f"<h1>clt_gen report: {_fmt(ck.get('arch'))} on {_fmt(data.get('name'))}</h1>",
        f"<p>checkpoint <code>{_fmt(ck.get('path'))}</code> (sha256 "
        f"{_fmt(str(ck.get('sha256', ''))[:12])}…), Ω = {_fmt(report.get('omega'))}, "
        f"clt_gen {_fmt(report.get('version'))}</p>",
        *_first_screen(report),
        "<h2>Summary</h2><ul class='summary'>",
        *[f"<li>{html.escape(s)}</li>" for s in report.get("summary", [])],
        "</ul>",
    ]
    risks = report.get("risks", {})
    if risks:
        parts.append(
            "<h2>Risks</h2><table><tr>"
            + "".join(f"<th>{html.escape(k)}</th>" for k in risks)
            + "</tr><tr>"
            + "".join(f"<td>{_fmt(v)}</td>" for v in risks.values())
            + "</tr></table>"
        )
    for title, img in _figures(report):
        parts.append(f"<h2>{html.escape(title)}</h2>{img}")
    if report.get("layers"):
        parts.extend(_layers_table(report["layers"]))
    if report.get("bounds"):
        parts.extend(_bounds_table(report["bounds"]))
    if report.get("pac_bayes"):
        parts.extend(_pac_bayes_section(report["pac_bayes"]))
    if report.get("trainability"):
        tr = report["trainability"]
        parts.append(
            "<h2>Trainability</h2><table>"
            + "".join(
                f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
                for k, v in tr.items()
                if not isinstance(v, (list, dict))
            )
            + "</table>"
        )
    parts.append(
        "<p style='color:#777;font-size:12px'>Deterministic bounds hold for every "
        "distribution (up to the estimation error of the entropies they use); "
        "probabilistic bounds fail with probability at most δ. Every certificate was "
        "computed without the check split it is compared with.</p></body></html>"
    )
    return "\n".join(parts)


def _best(bounds: list[dict[str, Any]], quantity: str) -> dict[str, Any] | None:
    cands = [
        b
        for b in bounds
        if b.get("quantity") == quantity
        and b.get("kind") != "estimate"
        and b.get("side") == "upper"
    ]
    return min(cands, key=lambda b: b["value"]) if cands else None


def _first_screen(report: dict[str, Any]) -> list[str]:
    """Return the table that answers how well, why, and with what guarantee, at a glance."""
    r = report.get("risks", {})
    bounds = report.get("bounds", [])
    if "check_error" not in r:
        return []
    pb = _best(bounds, "gibbs_error")
    held = _best(bounds, "error")

    def cert(
        b: dict[str, Any] | None, what: str, missing: str, after: str = ""
    ) -> tuple[str, str]:
        if b is None:
            return missing, "—"
        ok = "held" if b.get("held") else "FAILED"
        vac = " (vacuous)" if b.get("vacuous") else ""
        return (
            f"{what} ≤ {b['value']:.2%}{vac} ({b['name']}); measured on the check split: "
            f"{b['checked_value']:.2%}, {ok}{after}",
            f"certificate, δ = {b.get('delta')}",
        )

    det = (pb or {}).get("terms", {}).get("deterministic_check_error")
    rows = [
        (
            "How well?",
            f"test error {r['check_error']:.2%} (train {r['train_error']:.2%}); test risk "
            f"{r['check']:.4f}, gap {r['gap']:+.4f}",
            "measured",
        ),
        ("Guarantee from the training data",
         *cert(pb, "test error of the Gibbs network (fresh weights per prediction)",
               "not computed: evaluate with --pac-bayes (PAC-Bayes, no held-out data needed)",
               f" (the checkpoint's own: {det:.2%})" if det is not None else "")),
        ("Guarantee from held-out data",
         *cert(held, "test error of this checkpoint", "no held-out certificate")),
    ]
    layers = report.get("layers", [])
    if layers:
        last = layers[-1]
        h = last["H_heldout"]
        ci = h.get("ci") or []
        f = report.get("floor", {})
        resolved = [
            row for row in layers
            if row.get("information_loss") and loss_text(row["information_loss"])[0] != "<"
            and row["information_loss"].get("resolution") is not None
        ]
        loss = (
            f"largest resolvable information loss at '{resolved[0].get('label')}'"
            if resolved else "no information loss resolvable at this sample size"
        )
        rows.append(
            (
                "Why?",
                f"H(Y|{last.get('label') or last['name']}) ≈ {h['value']:.4f}"
                + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if len(ci) == 2 else "")
                + f" vs train risk {r['train']:.4f}; data floor {f.get('value', 0):.4f}; {loss}",
                "estimates (no guarantee)",
            )
        )
    vac = [b["name"] for b in bounds if b.get("vacuous")]
    if vac:
        rows.append(("Vacuous bounds", ", ".join(vac), "say nothing beyond the label frequencies"))
    return [
        "<table class='glance'><tr><th>question</th><th>answer</th><th>what it is</th></tr>",
        *[
            f"<tr><th>{html.escape(q)}</th><td>{html.escape(a)}</td><td>{html.escape(k)}</td></tr>"
            for q, a, k in rows
        ],
        "</table>",
    ]


def _pac_bayes_section(pb: dict[str, Any]) -> list[str]:
    """Return the HTML section saying what the PAC-Bayes certificate is about and is made of."""
    prior, shares = pb.get("prior", {}), pb.get("delta_shares", {})
    check = pb.get("check", {})
    rows = [
        ("certified network", pb.get("certified_network")),
        ("certificate on the 0-1 error", pb.get("values", {}).get("error")),
        ("certificate on the bounded cross-entropy", pb.get("values", {}).get("ce")),
        ("Gibbs network's check error (fresh draws)", check.get("gibbs_error")),
        ("the checkpoint's own check error", check.get("deterministic_error")),
        ("empirical Gibbs error on the bound's rows", pb.get("gibbs_risk", {}).get("error")),
        ("... its Monte-Carlo upper bound", pb.get("gibbs_risk_upper", {}).get("error")),
        ("KL(Q || P), nats", pb.get("kl")),
        ("rows of the bound", pb.get("n_samples")),
        ("Monte-Carlo terms", pb.get("n_mc_terms")),
        ("prior", f"{prior.get('kind')}, σ_P = {_fmt(prior.get('sigma'))} from a grid of "
                  f"{prior.get('grid_size')}"),
        ("δ shares", f"Monte Carlo {_fmt(shares.get('monte_carlo'))}, PAC-Bayes "
                     f"{_fmt(shares.get('pac_bayes'))} over {shares.get('n_priors')} priors"),
        ("sampling", pb.get("sampling")),
        ("parameters sampled", len(pb.get("sampled_parameters", []))),
        ("buffers not sampled", ", ".join(pb.get("not_sampled_buffers", [])) or "none"),
        ("seconds", pb.get("wall_time")),
    ]
    return [
        "<h2>PAC-Bayes certificate from the training data</h2><table>",
        *[f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows],
        "</table>",
    ]


def _kind_label(bound: dict[str, Any]) -> str:
    """``cert δ=0.05`` for probabilistic bounds, else the kind (``deterministic``, ``estimate``)."""
    kind = bound.get("kind")
    if kind == "probabilistic":
        return f"cert δ={bound.get('delta', float('nan')):g}"
    return str(kind)


def summary_table(report: dict[str, Any]) -> str:
    """Return a short terminal table: risks, floor, per-layer entropies, bounds."""
    r, f = report["risks"], report["floor"]
    lines = [
        f"risk   train {r['train']:.4f}  check {r['check']:.4f}  gap {r['gap']:+.4f}   "
        f"error train {r['train_error']:.3f} check {r['check_error']:.3f}",
        f"floor  {f['value']:.4f}   fitting error {f['fitting_error']:.4f}",
        "estimates: H train; probe (the layer's own head, held-out); H held-out (data-"
        "processing consistent); info loss ('< r': below its resolution r)",
        "certified (held-out, δ over all layers): U; U* = min of U over later layers, set "
        "by the layer in 'from'",
        f"{'layer':<18}{'dim':>5}{'H train':>9}{'probe':>9}{'H held-out':>11}{'U':>8}"
        f"{'U*':>8}  {'from':<10}{'info loss':>10}",
    ]
    for row in report["layers"]:
        up = row.get("H_upper") or {}
        probe = (row.get("probe") or {}).get("value", float("nan"))
        label = str(row.get("label") or row["name"])
        lines.append(
            f"{label[:17]:<18}{row['n_features']:>5}{row['H_train']['value']:>9.4f}"
            f"{probe:>9.4f}{row['H_heldout']['value']:>11.4f}"
            f"{up.get('value', float('nan')):>8.4f}{up.get('profile', float('nan')):>8.4f}  "
            f"{str(row.get('bound_from') or '')[:9]:<10}"
            f"{loss_text(row['information_loss']):>10}"
            + ("  " + ",".join(row["flags"]) if row["flags"] else "")
        )
    lines.append(f"{'bound':<40}{'kind':<14}{'value':>9}{'checked':>9}  held")
    for b in report["bounds"]:
        checked = b["checked_value"] if b["checked_value"] is not None else float("nan")
        lines.append(
            f"{b['name'][:39]:<40}{_kind_label(b):<14}{b['value']:>9.4f}{checked:>9.4f}  "
            f"{b['held']}" + ("  vacuous" if b.get("vacuous") else "")
        )
    return "\n".join(lines)

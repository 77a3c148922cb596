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


def _entropy_figure(report: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Layer entropies (train and held-out estimates with intervals) against the risks."""
    import numpy as np

    figs: list[tuple[str, str]] = []
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = new_figure((max(5, 0.9 * len(rows) + 2), 3.4))
    for key, label, off, color in (
        ("H_train", "train features", -0.1, "#1f77b4"),
        ("H_heldout", "held-out features", 0.1, "#d62728"),
    ):
        vals = np.array([r[key]["value"] for r in rows])
        lo = np.array([r[key]["ci"][0] if r[key]["ci"] else r[key]["value"] for r in rows])
        hi = np.array([r[key]["ci"][1] if r[key]["ci"] else r[key]["value"] for r in rows])
        lo, hi = np.minimum(lo, vals), np.maximum(hi, vals)
        ax.errorbar(
            x + off,
            vals,
            yerr=[vals - lo, hi - vals],
            fmt="o-",
            capsize=3,
            label=label,
            color=color,
        )
    risks = report.get("risks", {})
    if "train" in risks:
        ax.axhline(risks["train"], ls="--", color="#1f77b4", lw=1, label="train risk")
        ax.axhline(risks["check"], ls=":", color="#d62728", lw=1, label="check risk")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(f"H_Ω(Y|Z)  ({report.get('omega')})")
    ax.set_title("Conditional entropy of labels given each layer (95% CI)")
    ax.legend(fontsize=8)
    figs.append(("Layer entropies", plot_png(fig)))
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
        ax.set_xticks(range(len(vals)), [r["name"] for r in loss_rows], rotation=30, ha="right")
        ax.set_ylabel("Δ = H(Y|Z_l) − H(Y|Z_{l−1})")
        ax.set_title("Information lost by each layer (paired 95% CI; red: DPI flag)")
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
                + (", ESTIMATE)" if b.get("kind") == "estimate" else ")")
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
        ax.set_title("Each bound against its checked value (green: held; grey: an estimate)")
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


def _layers_table(layers: list[dict[str, Any]]) -> list[str]:
    """Return the per-layer table: estimates, certificates, information loss, flags."""
    parts: list[str] = []
    parts.append(
        "<h2>Layers</h2><p>H train and H held-out are <b>estimates</b> (model-based; "
        "interval: sampling noise and the heads' fluctuation, not their remaining "
        "excess risk). U is a <b>certified upper "
        "bound</b> on H(Y|Z) from held-out data (holds with probability ≥ 1−δ for any "
        "distribution, δ shared by all layers); U* = min over later layers of U (data "
        "processing). H(Y|Z) cannot be certified from below.</p>"
        "<table><tr><th>layer</th><th>features</th><th>H train (est.)</th>"
        "<th>H held-out (est.)</th><th>U (cert.)</th><th>U* (cert.)</th>"
        "<th>info loss (est.)</th><th>flags</th></tr>"
    )
    for r in layers:
        loss = r.get("information_loss")
        up = r.get("H_upper") or {}
        parts.append(
            f"<tr><td>{_fmt(r['name'])}</td><td>{r['n_features']}</td>"
            f"<td>{_fmt(r['H_train']['value'])}</td><td>{_fmt(r['H_heldout']['value'])}</td>"
            f"<td>{_fmt(up.get('value'))}</td><td>{_fmt(up.get('profile'))}</td>"
            f"<td>{_fmt(loss['value']) if loss else '—'}</td>"
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
        "<th>data used</th></tr>"
    )
    for b in bounds:
        cls = "ok" if b["held"] else "bad"
        parts.append(
            f"<tr><td>{_fmt(b['name'])}</td><td>{b['kind']}</td><td>{b['quantity']}</td>"
            f"<td>{b['side']}</td><td>{_fmt(b['value'])}</td><td>{_fmt(b['delta'])}</td>"
            f"<td>{_fmt(b['checked_value'])}</td><td class='{cls}'>{_fmt(b['held'])}</td>"
            f"<td>{_fmt(b.get('data_used', ''))}</td></tr>"
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
        ".bad{color:#c22}.summary li{margin:.3em 0}img{max-width:100%}</style></head><body>",
        f"<h1>clt_gen report: {_fmt(ck.get('arch'))} on {_fmt(data.get('name'))}</h1>",
        f"<p>checkpoint <code>{_fmt(ck.get('path'))}</code> (sha256 "
        f"{_fmt(str(ck.get('sha256', ''))[:12])}…), Ω = {_fmt(report.get('omega'))}, "
        f"clt_gen {_fmt(report.get('version'))}</p>",
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
        "estimates: H train, H held-out, info loss; certified (held-out, δ over all "
        "layers): U, U* = min of U over later layers",
        f"{'layer':<14}{'dim':>5}{'H train':>10}{'H held-out':>12}{'U':>9}{'U*':>9}"
        f"{'info loss':>11}",
    ]
    for row in report["layers"]:
        loss = row["information_loss"]["value"] if row["information_loss"] else float("nan")
        up = row.get("H_upper") or {}
        lines.append(
            f"{row['name']:<14}{row['n_features']:>5}{row['H_train']['value']:>10.4f}"
            f"{row['H_heldout']['value']:>12.4f}{up.get('value', float('nan')):>9.4f}"
            f"{up.get('profile', float('nan')):>9.4f}{loss:>11.4f}"
            + ("  " + ",".join(row["flags"]) if row["flags"] else "")
        )
    lines.append(f"{'bound':<40}{'kind':<14}{'value':>9}{'checked':>9}  held")
    for b in report["bounds"]:
        checked = b["checked_value"] if b["checked_value"] is not None else float("nan")
        lines.append(
            f"{b['name'][:39]:<40}{_kind_label(b):<14}{b['value']:>9.4f}{checked:>9.4f}  "
            f"{b['held']}"
        )
    return "\n".join(lines)

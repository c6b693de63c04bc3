"""Plotly figure builders for the notebooks, the report and the app.

Place in the data path: … → metrics → **plots** → report.

>>> fig = score_distributions({"vft": ([-0.1, -0.2], [-0.3])})
>>> len(fig.data)
2
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..eval.metrics import label

POS, NEG = "#2a9d8f", "#e76f51"  # right / wrong COTs: never used for a method or a checkpoint
# One colour per method, the same in every figure, distinct from each other and from POS/NEG
# (every pair at least ΔE 20 apart in CIELAB; tests/test_plots.py checks it)
METHOD_COLORS = {"vft": "#6c757d", "rft": "#1f77b4", "aft_bc": "#7b2cbf", "aft_dc": "#b5a000",
                 "align_only": "#8c564b", "aft_bc_bal": "#c77dff", "aft_rbc": "#e377c2", "dpo": "#17becf",
                 "rrhf": "#393b79", "pro": "#ff7f0e",
                 "vft_cont": "#343a40"}  # continued VFT: a darker grey than VFT's
_SPARE = ["#3a0ca3", "#9c6644", "#577590", "#b5179e", "#4d908e", "#f9844a", "#90be6d", "#43aa8b"]
# How a method is named in sentences (the report's headline); figures and tables keep the registry names
METHOD_LABELS = {"vft": "VFT", "rft": "RFT", "aft_bc": "AFT-BC", "aft_dc": "AFT-DC", "align_only": "alignment only",
                 "aft_bc_bal": "AFT-BC balanced", "aft_rbc": "AFT-RBC", "dpo": "DPO", "rrhf": "RRHF", "pro": "PRO",
                 "vft_cont": "VFT continued"}

# What the per-step AFT log keys (``records.LogRow``) show, as subplot titles
LOG_LABELS = {"neg_score": "wrong-COT score", "pos_score": "right-COT score", "gap": "gap (right − wrong)",
              "boundary": "boundary B", "neg_below_boundary": "share of wrong below B", "loss": "loss",
              "align_loss": "alignment loss", "grad_norm": "gradient norm", "lr": "learning rate"}
_LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0)


def _base(name: str) -> str:
    return name.split("/")[-1].split(" ")[0]


def method_label(name: str) -> str:
    """The name of a method in a sentence: ``"aft_bc"`` → ``"AFT-BC"``; other names as they are.

    >>> method_label("aft_bc"), method_label("rft"), method_label("my_method")
    ('AFT-BC', 'RFT', 'my_method')
    """
    return METHOD_LABELS.get(name, name)


def method_color(name: str, i: int = 0) -> str:
    """The colour of a method (or checkpoint) in every figure; names outside the registry get a spare one.
    Figures with several names outside the registry use :func:`method_colors`, which never repeats one.

    >>> method_color("aft_bc") != method_color("align_only") and POS not in METHOD_COLORS.values()
    True
    """
    return METHOD_COLORS.get(_base(name), _SPARE[i % len(_SPARE)])


def method_colors(names) -> dict[str, str]:
    """``{name: colour}`` for the names one figure shows: registry methods keep their own colour, other
    names take the spare colours in order, and no two names share one while colours last.

    >>> method_colors(["vft", "run A", "run B"])
    {'vft': '#6c757d', 'run A': '#3a0ca3', 'run B': '#9c6644'}
    """
    out, used = {}, set()
    for name in names:
        if _base(name) in METHOD_COLORS and METHOD_COLORS[_base(name)] not in used:
            out[name] = METHOD_COLORS[_base(name)]
            used.add(out[name])
    spare = [c for c in _SPARE + list(METHOD_COLORS.values()) if c not in used]
    for name in names:
        if name not in out:
            out[name] = spare.pop(0) if spare else _SPARE[len(out) % len(_SPARE)]
    return {name: out[name] for name in names}


def mass_range(values: list[float], lower: float = 0.5) -> tuple[list[float] | None, int]:
    """An axis range over where the values' mass is: from their ``lower``-th percentile to their maximum,
    padded 5%, and how many values lie below it; ``(None, 0)`` when no value would (keep plotly's).

    >>> mass_range([-3.5] + [-0.001 * i for i in range(300)])   # one score of 301 far below the rest
    ([-0.31395, 0.01495], 1)
    >>> mass_range([-0.3, -0.2, -0.1])
    (None, 0)
    """
    v = sorted(values)
    if not v:
        return None, 0
    lo, hi = v[int(lower / 100 * (len(v) - 1))], v[-1]
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.01
    below = sum(x < lo - pad for x in v)
    return ([round(lo - pad, 6), round(hi + pad, 6)], below) if below else (None, 0)


def score_distributions(by_method: dict[str, tuple[list[float], list[float]]], lower: float = 0.5) -> go.Figure:
    """Positive vs negative score distributions, one pair of violins per method. With few methods the
    figure is narrowed (a lone violin pair stretched across the page reads as a blob); with many it
    takes the page's width. A few very low scores (a COT the model finds absurd) would stretch the axis
    far below where the scores' mass sits, so the y axis starts at the ``lower``-th percentile of all
    scores; the subtitle says how many lie below it, and every score still shapes its violin.

    >>> score_distributions({"vft": ([-0.1], [-0.3])}).layout.width
    420
    >>> fig = score_distributions({"vft": ([-0.1 - 0.001 * i for i in range(300)], [-3.5, -0.2, -0.25])})
    >>> [round(y, 3) for y in fig.layout.yaxis.range], "1 of 303 scores lie below" in fig.layout.title.text
    ([-0.414, -0.085], True)
    """
    fig = go.Figure()
    for i, (method, (pos, neg)) in enumerate(by_method.items()):
        for vals, name, color, side in ((pos, "positive (correct)", POS, "negative"),
                                        (neg, "negative (wrong)", NEG, "positive")):
            fig.add_trace(go.Violin(x=[method] * len(vals), y=vals, name=name, legendgroup=name,
                                    showlegend=i == 0, side=side, line_color=color, meanline_visible=True,
                                    points=False, scalegroup=method))
    scores = [x for pos, neg in by_method.values() for x in pos + neg]
    yrange, below = mass_range(scores, lower)
    clip = (f"<br><sup>axis from the {lower:g}th percentile: {below:,} of {len(scores):,} scores lie below "
            f"(lowest {min(scores):.2f})</sup>" if below else "")
    fig.update_layout(title="Scores of right vs wrong sampled COTs<br><sup>length-normalised log-likelihood<br>"
                            "of the fixed sample set under each model</sup>" + clip,  # short lines: fits 420 px
                      yaxis_title="score s(c) (nats / token)", violingap=0.1, violinmode="overlay",
                      yaxis_range=yrange, legend=_LEGEND_BELOW, margin=dict(b=110, t=120 if below else None),
                      width=200 + 220 * len(by_method) if len(by_method) <= 3 else None)
    return fig


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start); NaNs are skipped.

    >>> moving_average([1.0, 3.0, 5.0, float("nan"), 7.0], 2)
    [1.0, 2.0, 4.0, 5.0, 7.0]
    """
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1):i + 1] if v == v]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def training_curves(logs: dict[str, list[dict]], keys=("neg_score", "gap"), smooth: int = 25) -> go.Figure:
    """Per-step AFT logs (e.g. negative score and score gap), one line per method in its own colour.

    Each step's batch is 16 questions, so raw curves are noisy: with ``smooth`` > 1 the raw values
    are drawn faint and a trailing ``smooth``-step moving average on top.
    """
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[LOG_LABELS.get(k, k) for k in keys])
    colors = method_colors(list(logs))
    for method, log in logs.items():
        color = colors[method]
        steps = [r["step"] for r in log]
        for c, key in enumerate(keys, 1):
            raw = [r[key] for r in log]
            if smooth > 1:
                fig.add_trace(go.Scatter(x=steps, y=raw, mode="lines", name=f"{method} (raw)", legendgroup=method,
                                         showlegend=False, opacity=0.25, line=dict(color=color, width=1),
                                         hoverinfo="skip"), row=1, col=c)
                raw = moving_average(raw, smooth)
            fig.add_trace(go.Scatter(x=steps, y=raw, mode="lines", name=method, legendgroup=method,
                                     showlegend=c == 1, line_color=color), row=1, col=c)
    note = f"<br><sup>{smooth}-step moving average over the faint raw values; scores in nats/token</sup>" \
        if smooth > 1 else "<br><sup>scores in nats/token</sup>"
    fig.update_layout(title="AFT training, per step" + note, legend=_LEGEND_BELOW, margin=dict(b=100))
    fig.update_xaxes(title_text="step")
    return fig


def accuracy_bars(methods: dict[str, dict], keys=("task_accuracy", "assessment_accuracy", "rerank_accuracy"),
                  errors: dict[str, dict] | None = None) -> go.Figure:
    """Grouped bars of accuracy metrics per method (optional ± std error bars)."""
    fig = go.Figure()
    for key in keys:
        err = [errors[m][key] for m in methods] if errors else None
        fig.add_trace(go.Bar(name=key, x=list(methods), y=[methods[m][key] for m in methods],
                             error_y=dict(type="data", array=err) if err else None))
    fig.update_layout(barmode="group", title="Accuracy per method", yaxis_title="accuracy", yaxis_range=[0, 1])
    return fig


def _span(values: list[float], lo: list[float], hi: list[float], min_span: float) -> list[float]:
    """An axis range covering every interval, at least ``min_span`` wide, so that gaps smaller than the
    noise do not fill the plot.

    >>> _span([0.75, 0.76], [0.74, 0.75], [0.76, 0.77], min_span=0.1)
    [0.7035, 0.8065]
    """
    a, b = min(lo + values), max(hi + values)
    pad = max(0.0, min_span - (b - a)) / 2 + 0.05 * (b - a)
    return [round(a - pad, 6), round(b + pad, 6)]


def spans(fig: go.Figure, axis: str = "x") -> dict[str, float]:
    """The span (top minus bottom of the range it was given) of each ``x`` or ``y`` axis of a figure, by
    axis name (``xaxis``, ``xaxis2``, …): what a caption says about the figure's scale, read from the
    figure itself. Axes left to plotly's autorange are not listed.

    >>> spans(assessment_vs_task({"a": (0.5, 0.5)}), "y")
    {'yaxis': 0.1}
    """
    layout = fig.to_plotly_json()["layout"]
    return {name: round(a["range"][1] - a["range"][0], 6) for name, a in sorted(layout.items())
            if name.startswith(axis + "axis") and isinstance(a, dict) and a.get("range") is not None}


def assessment_vs_task(points: dict[str, tuple[float, float]], intervals: dict[str, dict] | None = None,
                       min_span: float = 0.1) -> go.Figure:
    """Assessment accuracy against task accuracy, one point per model or checkpoint, each in its own
    colour and named in the legend (no text labels to collide). ``intervals``: ``{name: {"task": (lo, hi),
    "assess": (lo, hi)}}`` drawn as 95% error bars. Each axis spans at least ``min_span`` (10 points by
    default) and covers every interval, so gaps smaller than the noise cannot fill the plot; the
    subtitle states the spans."""
    fig = go.Figure()
    colors = method_colors(list(points))
    xs, ys, xlo, xhi, ylo, yhi = [], [], [], [], [], []
    for name, (x, y) in points.items():
        ci = (intervals or {}).get(name, {})
        (tl, th), (al, ah) = ci.get("task", (x, x)), ci.get("assess", (y, y))
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=name, marker=dict(size=11, color=colors[name]),
                                 error_x=dict(type="data", symmetric=False, array=[th - x], arrayminus=[x - tl]),
                                 error_y=dict(type="data", symmetric=False, array=[ah - y], arrayminus=[y - al]),
                                 hovertemplate=f"{name}: task %{{x:.1%}}, assessment %{{y:.1%}}<extra></extra>"))
        xs.append(x), ys.append(y), xlo.append(tl), xhi.append(th), ylo.append(al), yhi.append(ah)
    xr, yr = _span(xs, xlo, xhi, min_span), _span(ys, ylo, yhi, min_span)
    bars = "bars: 95% intervals; " if intervals else ""
    fig.update_layout(title=f"Assessment vs task accuracy<br><sup>{bars}x spans {100 * (xr[1] - xr[0]):.0f} points, "
                            f"y spans {100 * (yr[1] - yr[0]):.0f} points (never less than {100 * min_span:.0f})</sup>",
                      xaxis_title="task accuracy (greedy)", yaxis_title="assessment accuracy (pairs)",
                      xaxis=dict(range=xr, tickformat=".0%"), yaxis=dict(range=yr, tickformat=".0%"),
                      legend=_LEGEND_BELOW, margin=dict(b=110))
    return fig


def comparison_forest(comparisons: dict, vs: str = "rft",
                      metrics=("assessment_accuracy_strict", "rerank_accuracy", "task_accuracy")) -> go.Figure:
    """Paired differences against ``vs`` with their 95% intervals (``stats.comparisons``), in points:
    one row per method, one panel per metric, a line at zero. An interval that crosses zero is a
    difference this run cannot tell from noise."""
    rows = [m for m in comparisons if vs in comparisons[m]]
    colors = method_colors(rows)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[label(m) for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.06)
    for c, metric in enumerate(metrics, 1):
        for m in rows:
            d = comparisons[m][vs].get(metric)
            if not d:
                continue
            fig.add_trace(go.Scatter(x=[100 * d["diff"]], y=[m], mode="markers", showlegend=False,
                                     marker=dict(size=10, color=colors[m]),
                                     error_x=dict(type="data", symmetric=False, array=[100 * (d["hi"] - d["diff"])],
                                                  arrayminus=[100 * (d["diff"] - d["lo"])]),
                                     hovertemplate=f"{m}: %{{x:+.1f}} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
                                                   "<extra></extra>"),
                          row=1, col=c)
        fig.add_vline(x=0, line_dash="dot", line_color="#999", row=1, col=c)
        ends = [100 * d[k] for m in rows if (d := comparisons[m][vs].get(metric)) for k in ("lo", "hi")]
        fig.update_xaxes(range=_span([0.0], ends or [0.0], ends or [0.0], min_span=1.0), row=1, col=c)
    fig.update_xaxes(title_text="points", zeroline=False)
    fig.update_yaxes(autorange="reversed")  # rows top to bottom in the order of the tables
    fig.update_layout(title=f"Each method minus {vs}, paired over the same held-out questions<br>"
                            "<sup>95% intervals; one that crosses the dotted zero line is not distinguishable</sup>",
                      height=160 + 45 * max(len(rows), 1))
    return fig


MIN_SPAN = 0.01  # half the least y range of a beta-sweep panel: 1 point of accuracy, 0.01 nats/token of gap


def beta_sweep(rows: list[dict], metrics=("gap", "task_accuracy", "assessment_accuracy")) -> go.Figure:
    """Metrics against the boundary margin beta (rows: ``{"beta": b, metric: value, ...}``), on a log
    axis labelled only at the betas swept (plotly's own log ticks read "2 5 0.1 2 5 1 2"). Each y axis
    spans at least ``MIN_SPAN`` of its metric around the values, so differences in the 8th decimal (a
    sweep whose beta did not take effect) draw as a flat line instead of a zigzag over the whole panel.

    >>> fig = beta_sweep([{"beta": b, "gap": 0.1 + 1e-9 * i} for i, b in enumerate((0.01, 0.1, 1.0))], metrics=("gap",))
    >>> ax = fig.layout.xaxis
    >>> ax.type, ax.tickmode, list(ax.ticktext), [round(y, 3) for y in fig.layout.yaxis.range]
    ('log', 'array', ['0.01', '0.1', '1'], [0.09, 0.11])
    """
    rows = sorted(rows, key=lambda r: r["beta"])
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics))
    for c, key in enumerate(metrics, 1):
        ys = [r[key] for r in rows]
        fig.add_trace(go.Scatter(x=[r["beta"] for r in rows], y=ys, mode="lines+markers", name=key), row=1, col=c)
        finite = [y for y in ys if y == y]
        if finite and max(finite) - min(finite) < MIN_SPAN:
            mid = (max(finite) + min(finite)) / 2
            fig.update_yaxes(range=[mid - MIN_SPAN, mid + MIN_SPAN], row=1, col=c)
    betas = [r["beta"] for r in rows]
    fig.update_xaxes(type="log", title_text="beta", tickmode="array", tickvals=betas,
                     ticktext=[f"{b:g}" for b in betas])
    fig.update_layout(title="Beta sweep (boundary constraint)", showlegend=False)
    return fig


def token_logprobs_view(a: tuple[list[str], list[float]], b: tuple[list[str], list[float]],
                        names=("correct COT", "wrong COT")) -> go.Figure:
    """Per-token log-probs of two COTs as bar rows: where does one out-score the other?"""
    fig = make_subplots(rows=2, cols=1, subplot_titles=list(names), vertical_spacing=0.25)
    for r, ((toks, lps), color) in enumerate(((a, POS), (b, NEG)), 1):
        fig.add_trace(go.Bar(x=list(range(len(toks))), y=lps, text=toks, textposition="outside",
                             marker_color=color, hovertext=[f"{t!r}: {lp:.3f}" for t, lp in zip(toks, lps)],
                             showlegend=False), row=r, col=1)
        fig.update_xaxes(tickvals=list(range(len(toks))), ticktext=toks, row=r, col=1)
    fig.update_layout(title="Per-token log-probabilities", yaxis_title="log P", yaxis2_title="log P")
    return fig


def cot_scores(labels: list[str], scores: dict[str, list[float]], correct: list[bool | None],
               texts: list[str] | None = None) -> go.Figure:
    """A dot plot of a handful of COTs' scores under one or two checkpoints, read like the ranked table.

    One row per COT, top to bottom in the order given (pass the table's); its score on x, so further
    right is more likely under that checkpoint, and the axis spans the scores rather than hanging
    them from 0. Dots are coloured by checkpoint (never the right/wrong colours) with a grey segment
    joining a COT's two scores; the row labels carry ✓/✗ in the right (POS) / wrong (NEG) colours.

    >>> fig = cot_scores(["COT 2 ✓", "COT 1 ✗"], {"vft": [-0.2, -0.5], "aft_bc": [-0.3, -0.9]}, [True, False])
    >>> [t.mode for t in fig.data], fig.layout.yaxis.autorange, list(fig.data[1].y)
    (['lines', 'markers', 'markers'], 'reversed', [0, 1])
    >>> POS not in (fig.data[1].marker.color, fig.data[2].marker.color)
    True
    """
    n = len(labels)
    rows = list(range(n))
    fig = go.Figure()
    series = list(scores.items())
    if len(series) > 1:  # the same COT's scores, joined: how far B moved it
        xs, ys = [], []
        for i in rows:
            xs += [vals[i] for _, vals in series] + [None]
            ys += [i] * len(series) + [None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#c8c8c8", width=2), showlegend=False,
                                 hoverinfo="skip"))
    colors: list[str] = []
    for j, (name, vals) in enumerate(series):
        color = method_color(name, j)
        if color in colors:
            color = next(c for c in _SPARE if c not in colors)
        colors.append(color)
        hover = [f"{labels[i]}<br>{name}: {vals[i]:.3f}" + (f"<br>{texts[i][:80]}" if texts else "") for i in rows]
        fig.add_trace(go.Scatter(x=list(vals), y=rows, mode="markers", name=name, hovertext=hover, hoverinfo="text",
                                 marker=dict(color=color, size=13, symbol=["circle", "diamond"][j % 2],
                                             line=dict(color="white", width=1))))
    tick = [f'<span style="color:{POS if c else NEG if c is not None else "#555"}">{lab}</span>'
            for lab, c in zip(labels, correct)]
    fig.update_yaxes(tickvals=rows, ticktext=tick, autorange="reversed", showgrid=True, gridcolor="#eee")
    fig.update_xaxes(title="score (nats / token) — further right = more likely under the checkpoint", zeroline=False)
    fig.update_layout(title="COT scores, in the table's order (rank 1 under A on top)", plot_bgcolor="white",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), height=170 + 34 * n,
                      margin=dict(l=10, r=10, t=80, b=50))
    return fig


def loss_curve(history: list[dict], marks: list[int] | None = None, accuracy: dict | None = None) -> go.Figure:
    """VFT training loss per logged step (``train_vft`` history); ``marks``: steps to flag (snapshots);
    ``accuracy``: {step: greedy task accuracy} drawn on a second axis (the plateau check)."""
    fig = make_subplots(specs=[[{"secondary_y": bool(accuracy)}]])
    fig.add_trace(go.Scatter(x=[h["step"] for h in history], y=[h["loss"] for h in history], mode="lines",
                             name="loss"))
    for m in marks or []:
        fig.add_vline(x=m, line_dash="dot", line_color="#999")
    if accuracy:
        steps = sorted(accuracy)
        fig.add_trace(go.Scatter(x=steps, y=[accuracy[s] for s in steps], mode="lines+markers",
                                 name="greedy task accuracy"), secondary_y=True)
        fig.update_yaxes(title_text="greedy task accuracy", range=[0, 1], tickformat=".0%", secondary_y=True)
    fig.update_layout(title="VFT: token NLL of the reference COTs" + (" and greedy accuracy" if accuracy else ""),
                      xaxis_title="step", legend=_LEGEND_BELOW)
    fig.update_yaxes(title_text="loss (nats / token)", secondary_y=False)
    return fig

"""HTML views and ipywidgets for the guided notebooks: sample counts, a question's ranked COTs, the
greedy COTs of several models side by side, the mode banner, the beta slider.

Place in the data path: the top, beside ``report`` (which owns the metrics table both use); the
stages they show come from ``aftlab.notebook``.

>>> side_by_side({"vft": [{"question": "q", "cot": "1 + 1 = 2. #### 2", "correct": True, "finished": True}]}).count("<tr>")
2
"""
from __future__ import annotations

import html
from pathlib import Path

from ..config import RunConfig
from ..records import GreedyRow, Record


def banner(cfg: RunConfig, work: Path | None = None):
    """What a notebook shows under its setup cell: the settings, and whether its models come from ``make demo``'s
    run (read in seconds) or are computed now into a work folder of their own (minutes, once)."""
    import torch
    from IPython.display import HTML
    settings = (f"preset <b>{html.escape(cfg.preset)}</b>, seed {cfg.seed}, {cfg.data.n_train:,} training / "
                f"{cfg.data.n_test:,} held-out questions, VFT {cfg.vft.steps:,} steps, "
                f"{torch.get_num_threads()} torch thread(s)")
    if work is None:
        where = ""
    elif (Path(work) / "metrics.json").is_file():
        where = f"; reading the run <code>{html.escape(str(work))}</code> (<code>make demo</code>'s)"
    else:
        where = (f"; computing into <code>{html.escape(str(work))}</code> (run <code>make demo</code> first "
                 "to open every notebook in seconds)")
    return HTML(f'<div style="border-left:4px solid #1f77b4;padding:4px 10px">{settings}{where}.</div>')


def sample_stats(records: list[Record]) -> dict:
    """Counts over sampled records: draws, distinct COTs, right/strict shares (per draw), questions
    with both groups or only one, and right COTs that are not the reference text.

    >>> rec = {"reference": "1 + 1 = 2. #### 2", "n_sampled": 3, "samples": [
    ...     {"cot": "1 + 1 = 2. #### 2", "correct": True, "strict": True, "count": 2},
    ...     {"cot": "1 + 1 = 3. #### 3", "correct": False, "strict": False, "count": 1}]}
    >>> s = sample_stats([rec]); s["right_share"], s["questions_mixed"], s["right_not_reference"]
    (0.6666666666666666, 1, 0)
    """
    from ..data.questions import canonical

    draws = sum(r["n_sampled"] for r in records)
    right = sum(s["count"] for r in records for s in r["samples"] if s["correct"])
    strict = sum(s["count"] for r in records for s in r["samples"] if s["strict"])
    kinds = [{s["correct"] for s in r["samples"]} for r in records]
    return {"questions": len(records), "draws": draws, "distinct": sum(len(r["samples"]) for r in records),
            "right_share": right / max(draws, 1), "strict_share": strict / max(draws, 1),
            "questions_mixed": sum(k == {True, False} for k in kinds),
            "questions_all_right": sum(k == {True} for k in kinds),
            "questions_all_wrong": sum(k == {False} for k in kinds),
            "right_not_reference": sum(s["correct"] and s["cot"] != canonical(r["reference"])
                                       for r in records for s in r["samples"])}


def pos_neg_scores(records: list[Record], scores: list[list[float]]) -> tuple[list[float], list[float]]:
    """Scores of all right and of all wrong samples, for ``plots.score_distributions``.

    >>> pos_neg_scores([{"samples": [{"correct": True}, {"correct": False}]}], [[-0.1, -0.2]])
    ([-0.1], [-0.2])
    """
    pairs = [(x, s["correct"]) for r, sc in zip(records, scores) for s, x in zip(r["samples"], sc)]
    return [x for x, ok in pairs if ok], [x for x, ok in pairs if not ok]


def strict_only(records: list[Record], scores: list[list[float]]) -> tuple[list[Record], list[list[float]]]:
    """Records and scores without the lucky samples (right answer, some wrong step): what is left
    is clean positives (every step checks out) and wrong answers.

    >>> recs = [{"samples": [{"correct": True, "strict": False}, {"correct": False, "strict": False}]}]
    >>> r, s = strict_only(recs, [[-0.1, -0.2]]); len(r[0]["samples"]), s
    (1, [[-0.2]])
    """
    out_r, out_s = [], []
    for r, sc in zip(records, scores):
        keep = [i for i, s in enumerate(r["samples"]) if s["strict"] or not s["correct"]]
        out_r.append({**r, "samples": [r["samples"][i] for i in keep]})
        out_s.append([sc[i] for i in keep])
    return out_r, out_s


def token_view(lm, question: str, cot: str) -> tuple[list[str], list[float]]:
    """(tokens, per-token log-probs) of a COT (EOS included) under ``lm``, for ``plots.token_logprobs_view``."""
    from ..model.scoring import score

    ids = lm.cot_ids(cot)
    _, per_token = score(lm, [lm.prompt_ids(question)], [ids])
    return lm.tokenizer.convert_ids_to_tokens(ids), per_token[0].tolist()


def credit_spans(lm, record: Record, strict: bool = True) -> list[dict]:
    """For each wrong COT of a sampled ``record``: the tokens it shares with a positive, the first
    step where it leaves every positive (what ``neg_credit="first_step"`` pushes down) and the rest,
    cut exactly as the AFT trainer cuts them (``sampling.groups`` then ``align.pack``)."""
    from ..align.aft import pack
    from ..sampling.samples import groups

    g = groups([record], strict)
    p = pack(lm, g, max_cots=len(g[0]["pos"]) + len(g[0]["neg"]))[0][0]
    out = []
    for cot, ids, a, b in zip(g[0]["neg"], p["cots"][p["n_pos"]:], p["skip"][p["n_pos"]:], p["stop"][p["n_pos"]:]):
        text = [lm.tokenizer.decode(x, skip_special_tokens=True) for x in (ids[:a], ids[a:b], ids[b:])]
        out.append({"cot": cot, "shared": text[0], "first_step": text[1], "rest": text[2]})
    return out


def credit_table(spans: list[dict]) -> str:
    """HTML: each wrong COT with its shared prefix plain, its first wrong step in bold red, the rest grey."""
    rows = "".join(f"<tr><td><code>{html.escape(x['shared'])} <b style='color:#c0392b'>"
                   f"{html.escape(x['first_step'])}</b> <span style='color:#999'>{html.escape(x['rest'])}"
                   "</span></code></td></tr>" for x in spans)
    return f"<table><tr><th>wrong COT: shared with a right one · <b>first wrong step</b> · rest</th></tr>{rows}</table>"


def ranked_table(record: Record, scores: dict[str, list[float]] | None = None) -> str:
    """HTML table of one question's samples: label, a mark per arithmetic step, answer, draws, and the
    score and rank under each checkpoint in ``scores`` (rows sorted by the first checkpoint's score, best
    first). A right answer reached through a wrong step is labelled "lucky", not "right".

    >>> rec = {"question": "q", "answer": "2", "reference": "1 + 1 = 2. #### 2", "samples": [
    ...     {"cot": "1 + 1 = 3. #### 3", "answer": "3", "correct": False, "strict": False, "count": 1},
    ...     {"cot": "1 + 1 = 2. #### 2", "answer": "2", "correct": True, "strict": True, "count": 2}]}
    >>> rows = ranked_table(rec, {"vft": [-0.1, -0.5]}).split("<table>")[1]  # wrong COT scored higher: first
    >>> rows.index("#### 3") < rows.index("#### 2"), "-0.100 (1)" in rows
    (True, True)
    >>> lucky = {**rec, "samples": [{"cot": "2 * 2 = 5. 5 - 3 = 2. #### 2", "answer": "2", "correct": True,
    ...                              "strict": False, "count": 1}]}
    >>> "lucky" in ranked_table(lucky) and "✗✓" in ranked_table(lucky)
    True
    """
    from ..data.answers import step_marks
    samples = record["samples"]
    scores = scores or {}
    order = list(range(len(samples)))
    if scores:
        first = next(iter(scores.values()))
        order.sort(key=lambda i: -first[i])
    ranks = {n: {i: r for r, i in enumerate(sorted(range(len(v)), key=lambda i: -v[i]), 1)}
             for n, v in scores.items()}
    head = "".join(f"<th>{html.escape(n)} score (rank)</th>" for n in scores)
    rows = []
    for i in order:
        s = samples[i]
        tag, color = (("✔ right", "#2a9d8f") if s["strict"] else ("✔ answer, ✘ a step (lucky)", "#b8860b")
                      if s["correct"] else ("✘ wrong", "#e76f51"))
        cells = "".join(f"<td>{v[i]:.3f} ({ranks[n][i]})</td>" for n, v in scores.items())
        rows.append(f"<tr><td style='color:{color}'>{tag}</td><td><code>{html.escape(s['cot'])}</code></td>"
                    f"<td>{step_marks(s['cot'])}</td><td>{html.escape(str(s['answer']))}</td>"
                    f"<td>{s.get('count', 1)}</td>{cells}</tr>")
    return (f"<p><b>Q:</b> {html.escape(record['question'])} <b>gold:</b> {html.escape(str(record['answer']))}"
            f"<br><b>reference:</b> <code>{html.escape(record['reference'])}</code></p>"
            f"<table><tr><th>label</th><th>COT</th><th>steps</th><th>answer</th><th>draws</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def question_picker(records: list[Record], scores: dict[str, list[list[float]]] | None = None,
                    only_mixed: bool = True, limit: int = 200):
    """An ipywidgets box: pick a question, see its samples ranked by each checkpoint's scores.

    ``scores``: {checkpoint: per-record score lists, as ``evaluate`` returns}; ``only_mixed`` lists
    only questions with both right and wrong samples (the ones assessment accuracy is about).
    """
    import ipywidgets as w

    idx = [i for i, r in enumerate(records)
           if not only_mixed or len({s["correct"] for s in r["samples"]}) == 2][:limit]
    if not idx:
        return w.HTML("<p>No question with both right and wrong samples.</p>")
    view = w.HTML()

    def show(i: int) -> None:
        view.value = ranked_table(records[i], {n: v[i] for n, v in (scores or {}).items()})

    pick = w.Dropdown(options=[(f"{records[i]['id']}: {records[i]['question'][:70]}", i) for i in idx],
                      description="question", layout=w.Layout(width="95%"))
    pick.observe(lambda ch: show(ch["new"]), names="value")
    show(idx[0])
    return w.VBox([pick, view])


def side_by_side(greedy: dict[str, list[GreedyRow]], n: int = 8) -> str:
    """HTML table: the greedy COTs of several models for the same first ``n`` questions."""
    names = list(greedy)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in names)
    rows = []
    for j in range(min(n, *(len(v) for v in greedy.values()))):
        cells = []
        for m in names:
            g = greedy[m][j]
            mark = "✔" if g["correct"] else ("✘" if g["finished"] else "✘ (unfinished)")
            cells.append(f"<td><code>{html.escape(g['cot'][:300])}</code> {mark}</td>")
        rows.append(f"<tr><td>{html.escape(greedy[names[0]][j]['question'])}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>question</th>{head}</tr>{''.join(rows)}</table>"


def figure_output(fig) -> dict:
    """A plotly figure as an nbformat ``display_data`` output: the bundle ``display(fig)`` would
    publish under the current ``plotly.io.renderers.default``, plus a text fallback."""
    data = dict(fig._repr_mimebundle_())
    data.setdefault("text/plain", f"<plotly figure: {fig.layout.title.text or 'untitled'}>")
    return {"output_type": "display_data", "data": data, "metadata": {}}


def beta_slider(rows: list[dict], keys=("gap", "train_gap", "train_neg_score", "task_accuracy",
                                        "assessment_accuracy", "rerank_accuracy")):
    """An ipywidgets box: move beta over precomputed runs (``rows``: ``{"beta": b, metric: ...}``,
    optionally ``train_log``) and see that run's metrics and its score trajectory.

    The figure is written into the ``Output`` widget's ``outputs`` state rather than captured with
    ``with out: display(...)``: capture makes nbclient (nbconvert, papermill) echo the outputs back to
    the kernel mid-cell, and under ipykernel 7 that intermittently left the cell's execute_reply
    unanswered and the whole run hung (seen twice on notebook 05 in full mode)."""
    import ipywidgets as w

    from .plots import training_curves
    from .writer import metrics_table

    rows = sorted(rows, key=lambda r: r["beta"])
    table, curve = w.HTML(), w.Output()

    def show(b: float) -> None:
        r = next(x for x in rows if x["beta"] == b)
        table.value = metrics_table({f"beta = {b:g}": r}, keys)
        log = r.get("train_log")
        fig = training_curves({f"BC, beta={b:g}": log}, ("neg_score", "gap", "boundary")) if log else None
        curve.outputs = (figure_output(fig),) if fig else ()

    slider = w.SelectionSlider(options=[r["beta"] for r in rows], description="beta", continuous_update=False)
    slider.observe(lambda ch: show(ch["new"]), names="value")
    show(rows[0]["beta"])
    return w.VBox([slider, table, curve])

"""The COT ranker app: one question, several COTs, their scores and ranks under one or two checkpoints.

Place in the data path: the outside, beside the CLI; every decision lives in ``aftlab.app.ranker``
(sampling → scoring → answers → ranker), this file only lays out widgets and wires them.

    aftlab app --runs runs                                     # or: python -m aftlab.app
    aftlab app --solutions ../shared/data/gsm8k/model_solutions.jsonl --adapters adapters

With no trained run, the untrained ``tiny (untrained, demo)`` checkpoint is built in code, so the
app always starts offline. It binds 127.0.0.1 unless told otherwise.

>>> app = build_app(runs_dir="no-such-folder")
>>> type(app).__name__
'Blocks'
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

INTRO = """# COT ranker
A model's **score** of a chain of thought (COT) is its mean log-probability per token given the
question (higher = more likely). AFT's premise: after plain fine-tuning, models often score a **wrong**
COT above a **right** one. Pick an example (or type a question and a gold answer), paste COTs
separated by a blank line and/or sample *k* from a checkpoint, then press **Rank**. Compare two
checkpoints side by side, e.g. `vft` vs `aft_bc`. Steps: ✓/✗ per arithmetic step `a op b = c`; tick
*step-valid only* to count a right answer reached through a wrong step as wrong. Checkpoints trained on
another task than the default one say so in the menus. A sampled COT that does not end within *max new tokens*
is **unfinished**: it has no answer, so it is left out of the right/wrong pairs. Released adapters (smol trained
on GSM8K solutions, `adapters/`) are listed as `released: …`. The table and the comparison download as CSV/JSON."""


def build_app(runs_dir: str | Path = "runs", solutions_path: str | Path | None = None, device: str = "auto",
              limits=None, concurrency: int = 2, n_examples: int = 30, adapters_dir: str | Path = "adapters"):
    """The Gradio Blocks of the ranker; nothing is trained or loaded until the first request. Checkpoints: the
    runs under ``runs_dir`` and the released adapters under ``adapters_dir`` (``released: smol-gsm8k/<arm>``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio's import: otherwise it calls out at launch
    import gradio as gr
    import pandas as pd

    from aftlab.app.ranker import (
        COLUMNS,
        NONE,
        SMOL,
        Limits,
        ModelCache,
        RankerError,
        default_pair,
        default_task,
        discover_checkpoints,
        export_files,
        gsm8k_examples,
        rank_request,
        released_adapters,
        synthetic_examples,
    )
    from aftlab.report.plots import cot_scores

    limits = limits or Limits()
    found = discover_checkpoints(runs_dir)
    released = released_adapters(adapters_dir)
    cache = ModelCache(found | released, device=device, root=runs_dir)
    exports = tempfile.TemporaryDirectory(prefix="aftlab-ranker-")  # removed with the app object
    examples = synthetic_examples(found, n_examples)
    if solutions_path:
        examples += gsm8k_examples(solutions_path, 2 * n_examples)
    by_label = {e["label"]: e for e in examples}
    a0, b0 = default_pair(list(found))
    where = (f"{len(found)} checkpoint(s) found in `{runs_dir}`." if found else
             f"No trained run in `{runs_dir}` yet (`aftlab run --preset smoke --out runs/smoke` makes one in "
             f"about a minute); the untrained demo model ranks COTs meanwhile.")
    if released:
        where += f" {len(released)} released adapter(s) in `{adapters_dir}`: " + ", ".join(f"`{n}`" for n in released) + "."
    if cache.tasks:
        where += (f" {len(cache.tasks)} of them were trained on another task than the default one "
                  f"({default_task()}) and say so in the menus.")

    trained = next((n for n in released if n.endswith("/aft_bc")), next(iter(released), NONE))

    def pick(label):
        e = by_label.get(label)
        if not e:
            return (gr.update(),) * 6
        if e["label"].startswith("GSM8K") and SMOL in cache.names:  # real text: models that can read it
            return e["question"], e["gold"], e["cots"], SMOL, trained, SMOL
        return e["question"], e["gold"], e["cots"], gr.update(), gr.update(), gr.update()

    def follow(a):
        """Checkpoint A chosen: sample with it too, with its token budget (a GSM8K solution's for smol)."""
        return a, cache.token_budget(a, limits)

    def rank(question, gold, pasted, a, b, sample_with, k, temperature, max_new_tokens, seed, strict):
        try:
            r = rank_request(cache, question, gold, pasted, a, b, sample_with, k, temperature, max_new_tokens,
                             seed, limits, strict=bool(strict))
        except RankerError as e:
            return f"⚠️ **Error:** {e}", pd.DataFrame(columns=COLUMNS), None, None
        except Exception as e:  # a broken checkpoint must not take the app down; say what happened
            return f"⚠️ **Error:** {type(e).__name__}: {str(e)[:300]}", pd.DataFrame(columns=COLUMNS), None, None
        order = r.order  # the chart lists COTs as the table does
        fig = cot_scores([r.labels[i] for i in order],
                         {f"{key}: {name}": [r.scores[name][i] for i in order] for key, name in r.checkpoints.items()},
                         [r.correct[i] for i in order], [r.cots[i] for i in order])
        return r.message, pd.DataFrame(r.rows, columns=COLUMNS), fig, r

    def export(r):
        """The last ranking's downloads; hidden until there is one."""
        if r is None:
            return (gr.DownloadButton(visible=False),) * 3
        paths = export_files(r, tempfile.mkdtemp(dir=exports.name))
        return tuple(gr.DownloadButton(value=str(paths[i]), visible=True) if i < len(paths)
                     else gr.DownloadButton(visible=False) for i in range(3))

    # delete_cache: Gradio's copies of the downloads go after an hour, so a long-running app does not fill the disk
    with gr.Blocks(title="aftlab COT ranker", delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO + "\n\n" + where)
        with gr.Row():
            with gr.Column(scale=3):
                first = examples[0]  # pre-filled, so a newcomer's first click on Rank already shows a ranking
                example = gr.Dropdown([e["label"] for e in examples], value=first["label"], label="Example (optional)")
                question = gr.Textbox(first["question"], label="Question", lines=3, placeholder="Mia has 7 shells. …")
                gold = gr.Textbox(first["gold"], label="Gold answer (optional)", placeholder="e.g. 17")
                pasted = gr.Textbox(first["cots"], label="COTs (separate with a blank line)", lines=8,
                                    placeholder="3 * 4 = 12. 12 + 5 = 17. #### 17\n\n3 + 4 = 7. #### 7")
            with gr.Column(scale=2):
                names = cache.names
                menu = [(cache.label(n), n) for n in names]  # values stay names; labels add the task note
                ckpt_a = gr.Dropdown(menu, value=a0, label="Checkpoint A")
                ckpt_b = gr.Dropdown([(NONE, NONE)] + menu, value=b0, label="Checkpoint B (optional)")
                sample_with = gr.Dropdown(menu, value=a0, label="Sample COTs with")
                # number boxes, not sliders: a slider clips 50 to its maximum without a word; the ranker refuses
                # an out-of-range value and says why
                k = gr.Number(4, label=f"k (COTs to sample, 0 to {limits.max_k}; 0 = only pasted)", elem_id="k")
                temperature = gr.Number(0.8, label=f"temperature (0 to {limits.max_temperature:g})",
                                        elem_id="temperature")
                max_new = gr.Number(cache.token_budget(a0, limits), elem_id="max-new-tokens",
                                    label=f"max new tokens (1 to {limits.max_new_tokens})")
                seed = gr.Number(0, precision=0, label="seed")
                strict = gr.Checkbox(False, label="step-valid only: right = right answer and every step checks out")
                go = gr.Button("Rank", variant="primary")
        status = gr.Markdown(elem_id="status")
        last = gr.State(None)
        table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, label="COTs ranked by checkpoint A",
                             elem_id="ranking", max_height=600,
                             column_widths=["3%", "33%", "13%", "5%", "7%", "5%", "7%", "6%", "6%", "6%", "9%"])
        plot = gr.Plot(label="Scores", elem_id="scores")
        with gr.Row():
            downloads = [gr.DownloadButton(label, visible=False, elem_id=eid, size="sm") for label, eid in
                         (("Download table (CSV)", "dl-csv"), ("Download table + summary (JSON)", "dl-json"),
                          ("Download A vs B comparison (CSV)", "dl-cmp"))]
        example.change(pick, example, [question, gold, pasted, ckpt_a, ckpt_b, sample_with], api_name="pick")
        ckpt_a.change(follow, ckpt_a, [sample_with, max_new], api_name="follow")
        sample_with.change(lambda name: cache.token_budget(name, limits), sample_with, max_new, api_name="budget")
        go.click(rank, [question, gold, pasted, ckpt_a, ckpt_b, sample_with, k, temperature, max_new, seed, strict],
                 [status, table, plot, last], api_name="rank"
                 ).then(export, last, downloads, api_name="export")
        gr.Markdown(f"Models: {', '.join(f'`{n}`' for n in names)}. Caps: question ≤ {limits.max_question_chars} "
                    f"characters, COT ≤ {limits.max_cot_chars}, ≤ {limits.max_cots} COTs, k ≤ {limits.max_k}.")
    app.queue(default_concurrency_limit=concurrency, max_size=64)
    app.cache = cache  # the tests check each checkpoint is loaded once
    app.exports = exports  # the downloads' folder lives as long as the app
    return app


def launch(app, host: str = "127.0.0.1", port: int | None = None, threads: int = 1, **kw):
    """Serve ``app``; loopback only unless ``host`` says otherwise.

    Sets torch to ``threads`` intra-op threads for the process: requests run side by side (the queue's
    concurrency limit), and each one splitting its tiny matmuls over every core oversubscribes them —
    on a busy 2-core machine a 12-token sample went from 0.14 s to 9 s.
    """
    import torch
    torch.set_num_threads(threads)
    return app.launch(server_name=host, server_port=port, ssr_mode=False, footer_links=["api"], **kw)

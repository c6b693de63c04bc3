"""Report: figures, the HTML report, notebook views and experiment trackers — the top of the data path.

- ``plots``: plotly figures
- ``writer``: the self-contained HTML report of a run (its page: ``templates/report.html.j2``)
- ``provenance``: the commit, date and machine a run came from
- ``views``: HTML views and widgets for the notebooks
- ``offline``: notebook figures and formulas that an HTML export keeps without a network
- ``trackers``: TensorBoard, MLflow, W&B, Trackio through ``accelerate.tracking``
"""

"""Report: figures, the HTML report, notebook views and experiment trackers — the top of the data path.

- ``plots``: plotly figures
- ``writer``: the self-contained HTML report of a run
- ``views``: HTML views and widgets for the notebooks
- ``trackers``: TensorBoard, MLflow, W&B, Trackio
"""

"""Eval: metrics of a model and comparisons between models, with paired confidence intervals.

- ``metrics``: task, assessment, rerank accuracy, self-consistency, Kendall tau (pure functions)
- ``evaluate``: one model on the held-out questions and the fixed assessment set
- ``stats``: paired bootstrap intervals
- ``assess``: scoring external COTs (GSM8K model_solutions): per-question rows, intervals
- ``crossval``: K-fold results pooled, paired differences, the pre-registered verdicts
- ``export``: a run's models and samples as files
"""

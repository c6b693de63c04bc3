"""Sampling: k COTs per question from a model, labelled by answer, cached as JSONL.

- ``samples``: generate, label, de-duplicate, cache; the positive/negative groups AFT trains on
- ``vllm``: the optional vLLM sampler
- ``solutions``: external COTs (GSM8K ``model_solutions``) as the same sample records
"""

"""Data: questions and their answers — the bottom of the data path.

- ``questions``: the built-in synthetic task and GSM8K / AQuA / ECQA-format JSONL files
- ``answers``: final-answer extraction and per-step arithmetic checks (a safe parser, never eval)
- ``solutions``: GSM8K ``model_solutions.jsonl`` (COTs written by other models, labels checked), K folds
"""

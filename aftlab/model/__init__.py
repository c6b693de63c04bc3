"""Model: build or load a causal LM, and score COTs with it.

- ``lm``: the tiny model and tokenizer, loading any Hugging Face model or checkpoint folder, LoRA
- ``smol``: SmolLM2-135M-Instruct from its offline GGUF file
- ``head``: the fused output layer for scoring
- ``scoring``: length-normalised log-likelihood of COTs, batched, questions shared across their COTs
- ``runtime``: device, threads and bf16 autocast
"""

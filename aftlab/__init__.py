"""aftlab: a research workbench for Alignment Fine-Tuning (AFT)."""

"""Builders of tiny, random but real-format artifacts (checkpoints, tokenizers) for tests and benchmarks."""

"""Evaluation: perplexity and bits per byte, and baselines to compare against."""

"""Benchmarks of lmforge against its peers (Hugging Face transformers, nanoGPT), side by side in one run.

Run `python -m bench --help` from the repository root; bench/README.md explains every figure.
Nothing in lmforge imports this package, and it is not installed with lmforge.
"""

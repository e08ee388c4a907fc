"""Making a trained model smaller and faster: integer weights (quantize.py), pruning (prune.py) and
distillation into a smaller student (distill.py), each measured against the original."""

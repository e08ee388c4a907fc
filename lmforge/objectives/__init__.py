"""Training objectives: each is "model + batch -> loss"."""

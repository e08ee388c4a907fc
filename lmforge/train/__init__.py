"""Training: the loop, schedules, checkpoints and metrics."""

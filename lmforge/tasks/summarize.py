"""Summarisation: the translation task (translate.py) from a long text to a short one.

    rows:      (body, summary) pairs: the built-in bbc-news (article -> headline) or two columns of a file
    headline:  ROUGE-L of beam-search outputs on the validation split (task.metric: rougeL)
    baseline:  lead-1, the body's first sentence: the figure a summariser has to beat
"""

from __future__ import annotations

from lmforge.tasks.translate import Translation


class Summarization(Translation):
    kind = "summarize"
    baseline = "lead-1"  # the body's first sentence (evaluate/baselines.py)

    def max_new_tokens(self, src: list[list[int]]) -> int:
        """A summary is bounded by the target length the task allows, not by its long source."""
        return self.max_tgt + 1

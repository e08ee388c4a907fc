"""Downstream tasks: each turns rows into batches, gives the loss, evaluates with its headline
metric and predicts for new rows (classify.py, token.py, qa.py; translate.py and summarize.py for
encoder-decoder models, which generate their outputs); pretrain.py holds the pretraining
objectives in the same shape. Fine-tuning, cross-validation and `lmforge predict` (train/) are thin
loops over the task that `task_class(kind)` gives."""

from __future__ import annotations

from lmforge.errors import LmforgeError

KINDS = ("classify", "token", "qa", "translate", "summarize", "chat")
GENERATIVE = ("translate", "summarize")  # encoder-decoder tasks: scored on what the model writes


def task_class(kind: str):
    """The task of `kind` (task.kind in a recipe, a fine-tuned model's head)."""
    if kind == "classify":
        from lmforge.tasks.classify import Classification as cls
    elif kind == "token":
        from lmforge.tasks.token import TokenClassification as cls
    elif kind == "qa":
        from lmforge.tasks.qa import QuestionAnswering as cls
    elif kind == "translate":
        from lmforge.tasks.translate import Translation as cls
    elif kind == "summarize":
        from lmforge.tasks.summarize import Summarization as cls
    elif kind == "chat":
        from lmforge.tasks.chat import ChatTask as cls
    else:
        raise LmforgeError("{setting} is not supported; use classify, token, qa, translate, summarize or chat",
                           "task.kind", kind)
    return cls

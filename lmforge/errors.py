"""The exception types a user can cause.

Anything raised as `LmforgeError` is a problem with the user's input or environment, not a bug:
the CLI prints its message as one line on stderr (no traceback) and exits with status 2. The
message names the problem and the fix in one sentence.

An error about one setting carries that setting as `field` (a recipe key such as `train.lr`, or a
function's argument such as `column`), and its message writes `{field}` where the setting is named
and `{setting}` where it is named with its value. Each front door names it its own way, so no text
is ever rewritten by pattern:

    a recipe or --set     train.lr          train.lr=inf
    a Python argument     lr                lr=inf
    a CLI flag            --lr              --lr inf          (cli/ maps keys to flags with one table)
"""

from __future__ import annotations


class LmforgeError(Exception):
    """A problem the user can fix; the message says what it is and how."""

    def __init__(self, message: str, field: str | None = None, value=None):
        self.template, self.field, self.value = message, field, value
        super().__init__(self._render(field) if field else message)

    def _render(self, name: str) -> str:
        if name.startswith("-"):  # a flag and its value, as typed on a command line
            setting = f"{name} {self.value}"
        else:
            value = repr(self.value) if isinstance(self.value, str) else self.value
            setting = f"{name}={value}"
        return self.template.format(field=name, setting=setting)

    def _saying(self, message: str, **changes) -> "LmforgeError":
        """This error (same type and attributes, `changes` applied) with another message."""
        e = type(self).__new__(type(self))
        e.__dict__.update(self.__dict__, **changes)
        e.args = (message,)
        return e

    def about(self, field: str) -> "LmforgeError":
        """The same error about another name for the same setting (e.g. `column` -> `task.text_column`)."""
        return self._saying(self._render(field), field=field)

    def named(self, name: str) -> "LmforgeError":
        """The same error with its field named as a front door names it: `--lr`, `lr` or `train.lr`."""
        return self._saying(self._render(name))


class Diverged(LmforgeError):
    """Training produced a loss or gradient that is not a finite number; the last good checkpoint is kept.
    Each front door adds the fix in its own terms (`advice`)."""

    def __init__(self, what: str, value: float, step: int, kept_step: int | None, run_dir,
                 advice: str = "lower the learning rate or lengthen the warmup, then start again"):
        self.what, self.loss, self.step, self.kept_step, self.run_dir = what, value, step, kept_step, run_dir
        kept = (f"the last good checkpoint (step {kept_step}) is kept in {run_dir}" if kept_step is not None
                else f"no checkpoint was saved in {run_dir}")
        self.base = f"the training {what} became {value} at step {step}; {kept}"
        super().__init__(f"{self.base}: {advice}")

    def advise(self, advice: str) -> "Diverged":
        return self._saying(f"{self.base}: {advice}")


"""How many threads run the compiled step: measured while it runs, since the best count depends
on what else the machine is doing. The count is passed to each step (an OpenMP num_threads clause);
PyTorch's own thread count is read, never set."""

from __future__ import annotations

import os
import threading

import torch

_forked = threading.Event()  # set in a forked child: its OpenMP pool's threads were not copied by fork
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked.set)


def _threads() -> int:
    """PyTorch's thread count; 1 in a forked child (GNU OpenMP's worker threads do not survive a
    fork, and a parallel step there could wait on them forever)."""
    return 1 if _forked.is_set() else torch.get_num_threads()


class ThreadTuner:
    """Chooses how many threads run the step by timing it, because the best count depends on what
    else the machine is doing. On 2 idle cores two threads decode about 1.5x faster than one; with
    another program busy on those cores, the threads' barriers wait on each other's time slices and
    two threads run two to five times slower than one.

    A trial runs a neighbouring count (half or double, within 1..most) for `TRIAL` steps and keeps it
    if its mean step time beats the mean of the last `WINDOW` steps by 10% (means, not medians: the
    steps a busy core stalls are what a slow count costs). A trial stops early once it can no longer
    win, or after 2 steps if it is 25% slower: with busy cores, the first step with more threads
    can take a hundred times its usual time. When trials run:

    - the first trial comes after `SOON` steps (the machine may be busy from the start);
    - each trial that loses doubles the wait for the next (up to `LONGEST` steps), so a settled
      machine pays for trials rarely;
    - with all threads, a trial also comes within `SOON` steps of the window's mean rising 50% above
      the best window seen (another program has started); that wait doubles each time such a trial
      loses, so a machine whose speed merely wanders is not tried over and over;
    - a trial that wins resets the wait: to `SOON` with fewer threads, so that they come back soon
      after the other program ends, and to `LATE` with all of them."""

    TRIAL, WINDOW, SOON, LATE, LONGEST = 16, 32, 32, 512, 4096

    def __init__(self, most: int):
        self.most = self.threads = max(1, most)
        self.interval, self._since = self.SOON, 0
        self._recent: list[float] = []
        self._best: dict[int, float] = {}  # the lowest window mean seen per thread count
        self._slowed = False  # all threads, and the window's mean well above the best
        self._soon = self.SOON  # the wait after a slow-down; doubles with each trial that then loses
        self._trial: list[float] | None = None  # the trial's step times, while one runs
        self._home = self.threads
        self._down = True  # the direction of the next trial
        self._guard = threading.Lock()  # several Python threads may decode at once

    def record(self, seconds: float) -> None:
        """The time of one step just run with `self.threads` threads."""
        if self.most > 1:
            with self._guard:
                self._record(seconds)

    def _record(self, seconds: float) -> None:
        if self._trial is not None:
            self._trial.append(seconds)
            n, spent, mean = len(self._trial), sum(self._trial), self._mean()
            if n == self.TRIAL or spent > 0.9 * self.TRIAL * mean or (n >= 2 and spent > 1.25 * n * mean):
                self._judge()  # done; or it can no longer win, or is clearly losing
            return
        self._recent = (self._recent + [seconds])[-self.WINDOW:]
        self._since += 1
        if len(self._recent) < self.WINDOW:
            return
        mean = self._mean()
        best = self._best[self.threads] = min(self._best.get(self.threads, mean), mean)
        slowed = self.threads == self.most and mean > (1.2 if self._slowed else 1.5) * best
        if slowed and not self._slowed:  # the steps just slowed down: look soon, sooner the less it misled
            self.interval = min(self.interval, self._soon)
        self._slowed = slowed
        if self._since >= self.interval:
            self._start_trial()

    def _start_trial(self) -> None:
        other = max(1, self.threads // 2) if self._down else min(self.most, self.threads * 2)
        if other == self.threads:  # at an end: try the other direction
            self._down = not self._down
            other = max(1, self.threads // 2) if self._down else min(self.most, self.threads * 2)
        self._home, self.threads, self._trial = self.threads, other, []

    def _mean(self) -> float:
        return sum(self._recent) / len(self._recent)

    def _judge(self) -> None:
        trial, self._trial, self._since = self._trial, None, 0
        if len(trial) == self.TRIAL and sum(trial) / len(trial) < 0.9 * self._mean():  # keep the new count
            self._recent, self.interval = trial, self.LATE if self.threads == self.most else self.SOON
            self._soon = self.SOON
        else:
            self.threads, self.interval = self._home, min(self.LONGEST, 2 * self.interval)
            if self._slowed:
                self._soon = min(self.LONGEST, 2 * self._soon)
            self._down = not self._down


_lock = threading.Lock()
_tuners: dict[int, ThreadTuner] = {}  # per thread count allowed: what one decode learns, the next starts from


def shared_tuner() -> ThreadTuner:
    most = _threads()
    with _lock:
        return _tuners.setdefault(most, ThreadTuner(most))

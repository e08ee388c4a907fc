"""The models a server serves, each a name over a run directory, and a newer checkpoint swapped in
while it serves.

A `Version` is one loaded set of weights: its LM, its scheduler and chat template (a decoder), or
its labels (a classifier). A `Served` model is a name and its current version. Every request takes a
lease on the current version when it arrives and gives it back when its response has been sent, so
a request runs wholly on one set of weights. A reload (the run's commit marker changed, or
POST /v1/admin/reload) loads the new weights beside the old, which go on serving meanwhile; checks
them; then makes them current: requests that arrive after that get the new version, those in flight
finish on the old, and the old is let go (its scheduler stopped, its memory freed) when its last
lease comes back. New weights that fail to load (a truncated file, NaN, another shape) leave the old
version serving, and say why in one line of the log.

The commit marker: checkpoint.py renames the weights file in last, so a new checkpoint is committed
when that file's (inode, size, modification time) changes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import torch

from lmforge.api import LM, load
from lmforge.chat import ChatTemplate, HFChatTemplate, hf_chat_template
from lmforge.checkpoint import checkpoint_step, is_checkpoint, weights_file
from lmforge.config import GenerateConfig
from lmforge.errors import LmforgeError
from lmforge.generate.scheduler import QueueFull, Scheduler
from lmforge.serve.errors import ServeError
from lmforge.serve.metrics import Metrics
from lmforge.serve.monitor import Batcher, Monitor
from lmforge.serve.schemas import ChatRequest, CompletionRequest, Sampling
from lmforge.serve.stream import Choice, Wakeup
from lmforge.tasks.base import padding_id
from lmforge.tasks.classify import classify_texts
from lmforge.tasks.saved import saved_task


def commit_marker(run: Path | None) -> tuple | None:
    """What changes when a new checkpoint is committed in `run`: its weights file's identity."""
    try:
        st = weights_file(run).stat()
    except (OSError, TypeError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def kind_of(lm: LM) -> str:
    """"generate" (a decoder-only LM) or "classify" (a fine-tuned classifier); anything else is refused."""
    cfg = lm.config
    if cfg.head == "classify":
        return "classify"
    if cfg.family == "seq2seq":
        raise LmforgeError("lmforge serve serves decoder-only (GPT / Llama) models and classifiers; use lmforge "
                           "translate for an encoder-decoder")
    if cfg.head != "none" or not cfg.causal:
        raise LmforgeError(f"lmforge serve serves decoder-only (GPT / Llama) models and classifiers, not a "
                           f"{cfg.family} model with a {cfg.head} head; use lmforge predict for it")
    return "generate"


class Version:
    """One loaded set of weights of a served model."""

    def __init__(self, hub: "Models", name: str, lm: LM, marker: tuple | None):
        self.hub, self.name, self.lm, self.marker = hub, name, lm, marker
        self.kind = kind_of(lm)
        self.run = lm.path
        self.step = checkpoint_step(self.run) if self.run is not None and is_checkpoint(self.run) else None
        self.loaded_at = int(time.time())
        tag = hashlib.sha1(repr((str(self.run), marker, self.loaded_at, id(self))).encode()).hexdigest()[:8]
        self.fingerprint = f"{name}-step{self.step if self.step is not None else 0}-{tag}"
        self.leases = 0
        self.scheduler: Scheduler | None = None
        self.labels = list(lm.config.labels or []) if self.kind == "classify" else []
        self.canary: dict | None = None  # the canary set's score (serve/monitor.py)
        self.max_len = lm.config.context_length
        self.pair_column: str | None = None  # a classifier fine-tuned on text pairs: the second text's column
        if self.kind == "classify":
            saved = saved_task(self.run) if self.run is not None else {}
            self.pair_column = saved.get("text_pair_column")
            if saved.get("max_length"):
                self.max_len = min(int(saved["max_length"]), self.max_len)
            self.batcher = Batcher(self._classify)
        if self.kind == "generate":
            native = lm.engine._native(1)  # the compiled step, where it covers the model
            self.scheduler = Scheduler(lm.model, hub.max_batch, hub.max_queue, native=native, thread=hub.thread,
                                       wake=None if hub.thread else hub.wake)
            self.scheduler.after_tick = hub.flush
            self.template = (lm.path and hf_chat_template(lm.path)) or ChatTemplate()

    def shapes(self) -> dict:
        return {k: tuple(v.shape) for k, v in self.lm.model.state_dict().items()}

    def describe(self) -> dict:
        """This version in /v1/models: OpenAI's fields, and where it came from."""
        cfg = self.lm.config
        return {"id": self.name, "object": "model", "created": self.loaded_at, "owned_by": "lmforge",
                "run": str(self.run) if self.run is not None else None, "family": cfg.family, "task": self.kind,
                "parameters": self.lm.model.num_params(), "step": self.step, "fingerprint": self.fingerprint,
                **({"labels": self.labels} if self.labels else {}),
                **({"canary": self.canary} if self.canary else {})}

    def _classify(self, items: list[tuple[str, str | None]]):
        """(text, its pair or None) items -> their labels and probabilities."""
        texts, pairs = [t for t, _ in items], [p for _, p in items]
        return classify_texts(self.lm.model, self.lm.tokenizer, texts, self.max_len, padding_id(self.lm.tokenizer),
                              pairs if self.pair_column else None, log=lambda *_: None)

    def close(self) -> None:
        """Let the weights go: the scheduler stops; the memory is freed with the last reference."""
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self.kind == "classify":
            self.batcher.close()
        self.lm = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- requests (a decoder) ----------------------------------------------------------------------------
    def token_text(self, i: int) -> str:
        return self.lm.tokenizer.decode([i], skip_special_tokens=False)

    def settings(self, body: Sampling, prompt: list[int], stop_ids: tuple[int, ...], i: int) -> GenerateConfig:
        context = self.lm.config.context_length
        if len(prompt) >= context:
            raise ServeError(400, f"the prompt is {len(prompt)} tokens; this model's context is {context} tokens, "
                                  "with room needed for the reply: shorten it", param="messages")
        limit = getattr(body, "max_completion_tokens", None) or body.max_tokens or context - len(prompt)
        return GenerateConfig(max_new_tokens=min(limit, context - len(prompt)), temperature=body.temperature,
                              top_p=body.top_p if body.top_p < 1 else None, stop_ids=stop_ids,
                              seed=None if body.seed is None else body.seed + i)

    def chat_prompt(self, body: ChatRequest) -> tuple[list[int], tuple[int, ...], list[str]]:
        system = next((m.content for m in body.messages if m.role == "system"), None)
        turns = [(m.role, m.content) for m in body.messages if m.role != "system"]
        text = self.template.render(turns, system)
        if isinstance(self.template, HFChatTemplate):
            return self.lm.tokenizer.encode(text), self.template.stop_ids + self.lm.end_ids, list(self.template.stops)
        return self.lm.encode_prompt(text), self.lm.end_ids, list(self.template.stops)

    def completion_prompt(self, body: CompletionRequest) -> list[int]:
        if isinstance(body.prompt, list):
            vocab = self.lm.config.vocab_size
            if not body.prompt or any(not 0 <= t < vocab for t in body.prompt):
                raise ServeError(400, f"a prompt of token ids needs ids in 0..{vocab - 1}", param="prompt")
            return list(body.prompt)
        if not body.prompt:
            raise ServeError(400, "the prompt is empty", param="prompt")
        return self.lm.encode_prompt(body.prompt)

    def choices(self, body: Sampling, prompt: list[int], stop_ids, stops: list[str]) -> list[Choice]:
        self.hub.metrics.tokens_in.inc(len(prompt))
        made = []
        try:
            for i in range(body.n):
                made.append(Choice(self, prompt, self.settings(body, prompt, stop_ids, i), stops + (body.stop or []),
                                   body.top))
        except QueueFull as e:
            for c in made:
                c.request.cancel()
            raise ServeError(429, str(e), "rate_limit_exceeded") from None
        return made


class Lease:
    """A request's hold on one version; `release` (once, however often called) gives it back."""

    def __init__(self, served: "Served", version: Version):
        self.served, self.version, self._given_back = served, version, False

    def release(self) -> None:
        with self.served.hub.lock:
            if self._given_back:
                return
            self._given_back = True
        self.served.give_back(self.version)


class Served:
    """A model name, its current version, and the older ones still finishing requests."""

    def __init__(self, hub: "Models", name: str, lm: LM):
        self.hub, self.name = hub, name
        self.current = Version(hub, name, lm, commit_marker(lm.path))
        self.retiring: list[Version] = []
        self.failed: tuple | None = None  # the marker of a checkpoint that would not load: not tried again
        self.reloading = threading.Lock()  # one reload of this model at a time

    def lease(self, kind: str | None = None) -> Lease:
        with self.hub.lock:
            version = self.current
            if kind is not None and version.kind != kind:
                raise ServeError(400, f"the model {self.name!r} is a {'classifier' if version.kind == 'classify' else 'decoder'}"
                                      f"; {'use POST /v1/classify' if version.kind == 'classify' else 'use /v1/completions or /v1/chat/completions'}"
                                      " for it", param="model")
            version.leases += 1
        return Lease(self, version)

    def give_back(self, version: Version) -> None:
        with self.hub.lock:
            version.leases -= 1
            done = version is not self.current and version.leases == 0 and version in self.retiring
            if done:
                self.retiring.remove(version)
        if done:
            version.close()

    def due(self) -> bool:
        """The run holds a checkpoint other than the one serving, not already refused."""
        marker = commit_marker(self.current.run)
        return marker is not None and marker != self.current.marker and marker != self.failed

    def reload(self, only_if_due: bool = False) -> dict:
        """Load the run's checkpoint beside the serving one and switch to it; on failure keep serving.
        only_if_due (the watcher): only when due() still holds once this model's reload lock is held,
        so a watcher and POST /v1/admin/reload arriving together load a checkpoint once."""
        with self.reloading:
            old = self.current
            if old.run is None:
                raise ServeError(400, f"the model {self.name!r} was given as a loaded model, not a run directory, so "
                                      "there is nothing to reload it from", param="model")
            if only_if_due and not self.due():
                return {"model": self.name, "reloaded": False, "step": old.step}
            marker = commit_marker(old.run)
            try:
                new = self._load_beside(old, marker)
            except Exception as e:  # a damaged file, another shape, out of memory, ...: the old one keeps serving
                why = str(e) if isinstance(e, LmforgeError) else f"{type(e).__name__}: {str(e).strip()}"
                why = " ".join(why.split())  # one line of the log
                self.failed = marker
                self.hub.metrics.reloads.labels(self.name, "failed").inc()
                self.hub.log(f"reload of {self.name!r} failed, step {old.step} keeps serving: {why}")
                return {"model": self.name, "reloaded": False, "step": old.step, "error": why}
            with self.hub.lock:
                self.current, self.failed = new, None
                idle = old.leases == 0
                if not idle:
                    self.retiring.append(old)
            if idle:
                old.close()
            self.hub.switched(new)
            self.hub.metrics.reloads.labels(self.name, "done").inc()
            self.hub.log(f"reloaded {self.name!r}: step {old.step} -> {new.step}")
            return {"model": self.name, "reloaded": True, "step": new.step, "previous_step": old.step}

    def _load_beside(self, old: Version, marker: tuple | None) -> Version:
        """The run's checkpoint as a new version, checked (same shapes) and scored (the canary); let go on failure."""
        new = Version(self.hub, self.name, load(old.run), marker)
        try:
            if new.shapes() != old.shapes():
                raise LmforgeError(f"{old.run} now holds a model of another shape than the one serving; serve it "
                                   "under another name, or restart the server")
            self.hub.score_canary(new)
        except BaseException:
            new.close()
            raise
        return new


class Models:
    """Every model a server serves, by name, and what they share: the metrics, the event loop's
    wake-up, and (thread=False) one decoding loop the caller runs for all of them."""

    def __init__(self, models: dict[str, LM], max_batch: int = 16, max_queue: int = 256, thread: bool = True,
                 log=print, monitor=None):
        if not models:
            raise LmforgeError("give at least one model to serve: --model NAME=RUN")
        self.max_batch, self.max_queue, self.thread, self.log = max_batch, max_queue, thread, log
        self.lock = threading.RLock()
        self.wake, self._stop = threading.Event(), threading.Event()
        self.metrics = Metrics(self)
        self._wakeup: Wakeup | None = None
        self.monitor = monitor or Monitor(log=log)  # canary sets and drift
        self.served: dict[str, Served] = {}
        for name, lm in models.items():
            self.served[name] = Served(self, name, lm)
            self.score_canary(self.served[name].current)
            self.switched(self.served[name].current)
        self._watcher: threading.Thread | None = None

    def get(self, name: str) -> Served:
        served = self.served.get(name)
        if served is None:
            names = ", ".join(repr(n) for n in self.served)
            raise ServeError(404, f"the model {name!r} does not exist here; this server has {names}", param="model",
                             code="model_not_found")
        return served

    def schedulers(self) -> list[Scheduler]:
        """The schedulers of every version, read once each (a version let go sets its own to None)."""
        return [sch for sch in (v.scheduler for v in self.versions()) if sch is not None]

    def versions(self) -> list[Version]:
        with self.lock:
            return [v for s in self.served.values() for v in (s.current, *s.retiring)]

    # --- hooks for the monitor and the metrics ------------------------------------------------------------
    def score_canary(self, version: Version) -> None:
        self.monitor.score(version)

    def switched(self, version: Version) -> None:
        """A version became current: its gauges."""
        self.metrics.step.labels(version.name).set(version.step or 0)
        for outcome in ("done", "failed"):  # both series from the start: an alert on increase() sees the first
            self.metrics.reloads.labels(version.name, outcome)
        self.monitor.switched(version)

    # --- decoding -----------------------------------------------------------------------------------------
    def wakeup(self) -> Wakeup:
        """The Wakeup of the event loop serving requests (made on first use, inside that loop)."""
        if self._wakeup is None:
            import asyncio

            self._wakeup = Wakeup(asyncio.get_running_loop())
        return self._wakeup

    def flush(self) -> None:
        """Every scheduler's after_tick: the tick's tokens to the event loop in one hop."""
        if self._wakeup is not None:
            self._wakeup.flush()

    def run(self) -> None:
        """Decode every model's requests in the calling thread until `stop()` (with thread=False)."""
        try:
            while not self._stop.is_set():
                busy = False
                for sch in self.schedulers():
                    busy = sch.tick() or busy
                if not busy:
                    self.wake.wait(0.05)
                    self.wake.clear()
        finally:
            for sch in self.schedulers():
                sch.abandon()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        for sch in self.schedulers():
            sch.stop()

    # --- reloading ----------------------------------------------------------------------------------------
    def reload(self, name: str | None = None) -> list[dict]:
        """Reload one model (or all) from its run now."""
        return [s.reload() for s in ([self.get(name)] if name else self.served.values())]

    def watch(self, every: float) -> None:
        """Poll each run's commit marker every `every` seconds on a thread of its own; reload when it changes."""
        def loop():
            while not self._stop.wait(every):
                for s in list(self.served.values()):
                    try:
                        if s.current.run is not None and s.due():
                            s.reload(only_if_due=True)
                    except Exception as e:  # the watcher goes on watching
                        self.log(f"watching {s.name!r} failed ({type(e).__name__}: {e}); the next look tries again")
        self._watcher = threading.Thread(target=loop, name="lmforge-watch", daemon=True)
        self._watcher.start()

"""Which measurements run, in what order, each in its own subprocess (bench/worker.py).

Rounds interleave the peers: round r runs every section with the peer order rotated by r, so a
machine that slows down or speeds up during the run (other jobs, heat) touches every peer alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench.tokens import REPO

# section -> (worker task, peers that take part); "precision" is lmforge's other-dtype training row
SECTIONS = {
    "train": ("train", ("lmforge", "transformers", "nanogpt")),
    "greedy": ("greedy", ("lmforge", "transformers", "transformers_static_compiled", "nanogpt", "lmforge_compiled")),
    "sample": ("sample", ("lmforge", "transformers", "nanogpt")),
    "precision": ("train", ("lmforge",)),
}
ALIASES = {"decode": ("greedy", "sample"), "decode-compile": ("greedy",), "bf16": ("precision",), "memory": ("train", "greedy", "sample"),
           "all": tuple(SECTIONS)}


def parse_sections(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    chosen: list[str] = []
    for name in (s.strip() for s in only.split(",") if s.strip()):
        names = ALIASES.get(name, (name,))
        for n in names:
            if n not in SECTIONS:
                raise SystemExit(f"--only {name!r} is not a section; use {', '.join([*SECTIONS, *ALIASES])}")
            if n not in chosen:
                chosen.append(n)
    return chosen


@dataclass
class Job:
    section: str
    peer: str
    round: int
    spec: dict
    result: dict = field(default_factory=dict)
    seconds: float = 0.0


def plan(sections: list[str], peers: list[str], rounds: int, base: dict, precision_dtypes: list[str]) -> list[Job]:
    """Every measurement in run order. The precision section trains lmforge in each of
    `precision_dtypes`; its rows are labelled `lmforge@<dtype>`."""
    jobs = []
    for r in range(rounds):
        for section in sections:
            task, members = SECTIONS[section]
            runs = [(p, base["dtype"], p) for p in members if p in peers]
            if section == "precision":
                runs = [("lmforge", d, f"lmforge@{d}") for d in precision_dtypes]
            k = r % max(1, len(runs))
            for peer, dtype, label in runs[k:] + runs[:k]:
                jobs.append(Job(section, label, r, {**base, "task": task, "peer": peer, "dtype": dtype}))
    return jobs


def run(job: Job, timeout: float) -> dict:
    """Run one job in a fresh interpreter; a crash, a timeout or bad output becomes {"ok": False, "error"}."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(job.spec)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        job.seconds = time.perf_counter() - t
        return {"ok": False, "error": f"timed out after {timeout:.0f} s (raise --timeout)"}
    job.seconds = time.perf_counter() - t
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"ok": False, "error": f"worker exited with status {proc.returncode}: {tail[-400:]}"}


def run_all(jobs: list[Job], timeout: float, log) -> None:
    for i, job in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {job.section:<9} {job.peer:<28} round {job.round + 1} ...", end="")
        job.result = run(job, timeout)
        if job.result.get("ok"):
            rates = job.result.get("rates") or [0.0]
            log(f" {sorted(rates)[len(rates) // 2]:>10,.1f} tokens/s  ({job.seconds:.0f} s)")
        else:
            log(f" FAILED ({job.seconds:.0f} s): {job.result['error'][:200]}")

"""Past one process with torchrun: N processes take the steps one process takes with grad_accum x N
(DDP, and FSDP2 where it runs), resume works across process counts, and only process 0 writes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


WORDS = "the cat dog sat ran on in a mat log hat big small red".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    f = tmp_path_factory.mktemp("parallel") / "corpus.txt"
    f.write_text("\n".join(" ".join(rng.choices(WORDS, k=12)) for _ in range(1200)), encoding="utf-8")
    return f


def sets(corpus, *extra: str) -> list[str]:
    items = [f"data.corpus={corpus}", "data.tokenizer=char", "model.preset=gpt-micro", "model.context_length=32",
             "model.dropout=0.0", "train.batch_size=4", "train.max_steps=20", "train.eval_every=20",
             "train.eval_batches=2", "train.warmup_steps=5", "train.lr=3e-3", "train.dtype=float32",
             "train.device=cpu", "train.compile=false", *extra]
    return [x for s in items for x in ("--set", s)]


def lmforge(n: int, *args: str, torchrun: bool = False) -> subprocess.CompletedProcess:
    """`lmforge ARGS` in one process, or `torchrun --standalone --nproc_per_node n -m lmforge ARGS`
    (n > 1, or `torchrun`); each process on one thread, so that the products sum in the same order in
    every run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 or torchrun else []
    return subprocess.run([sys.executable, *launch, "-m", "lmforge", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def weights_match(a, b, tol: float = 1e-5) -> float:
    """The largest difference between two runs' weights, which must be below `tol`."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < tol, f"the runs differ by {worst}"
    return worst


def train(out, *extra: str, corpus=None, processes: int = 1, torchrun: bool = False) -> None:
    """`lmforge train` of the test's recipe on `corpus` into `out` (no corpus: resume the run there), in
    this process or under torchrun."""
    args = ["train", "--out", str(out), "--json"] + (["--resume"] if corpus is None else ["--recipe", "quickstart"])
    settings = sets(corpus, *extra) if corpus is not None else [x for s in extra for x in ("--set", s)]
    done = lmforge(processes, *args, *settings, torchrun=torchrun)
    if done.returncode != 0 and "fsdp" in " ".join(extra) and FSDP_UNSUPPORTED in done.stderr:
        pytest.skip(f"FSDP2 does not run on gloo (the CPU backend) in torch {torch.__version__}: {FSDP_UNSUPPORTED}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"run_dir"') == 1  # process 0 alone answers


@pytest.mark.slow
def test_fsdp2_over_one_process_takes_the_same_steps(tmp_path, corpus, one_process):
    """torchrun with one process and train.parallel=fsdp shards over a group of one (what
    bench.parallel measures on one GPU): the steps are still one process's."""
    train(tmp_path / "run", "train.grad_accum=2", "train.parallel=fsdp", corpus=corpus, torchrun=True)
    weights_match(tmp_path / "run", one_process)


FSDP_UNSUPPORTED = "does not support"


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory):
    """20 steps of one process with grad_accum 2: what every 2-process run must equal."""
    out = tmp_path_factory.mktemp("one") / "run"
    train(out, "train.grad_accum=2", corpus=corpus)
    return out


@pytest.mark.parametrize("parallel,checkpointing", [("ddp", False), ("fsdp", False),
                                                    pytest.param("ddp", True, marks=pytest.mark.slow),
                                                    pytest.param("fsdp", True, marks=pytest.mark.slow)])
def test_two_processes_take_the_steps_of_one_with_grad_accum_two(tmp_path, corpus, one_process, parallel, checkpointing):
    train(tmp_path / "two", "train.grad_accum=1", f"train.parallel={parallel}",
          f"train.activation_checkpointing={str(checkpointing).lower()}", corpus=corpus, processes=2)
    weights_match(tmp_path / "two", one_process)
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in rows if r.get("step") == 20 and "loss" in r) == 1  # one process logged
    assert (tmp_path / "two" / "loss.png").is_file()


@pytest.mark.parametrize("first,then", [(2, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_a_run_resumes_with_another_number_of_processes(tmp_path, corpus, first, then):
    """10 steps with `first` processes, then to 20 with `then`: the weights of 10 + 10 steps in one."""
    for name, (a, b) in {"mixed": (first, then), "alone": (1, 1)}.items():
        train(tmp_path / name, f"train.grad_accum={2 // a}", "train.max_steps=10", corpus=corpus, processes=a)
        train(tmp_path / name, f"train.grad_accum={2 // b}", "train.max_steps=20", processes=b)
    weights_match(tmp_path / "mixed", tmp_path / "alone")


def test_activation_checkpointing_gives_the_same_steps(tmp_path, corpus, one_process):
    train(tmp_path / "run", "train.grad_accum=2", "train.activation_checkpointing=true", corpus=corpus)
    weights_match(tmp_path / "run", one_process, tol=1e-6)


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (from /proc), children first."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc (Linux)")
def test_a_killed_two_process_run_resumes_in_one(tmp_path, corpus):
    """torchrun's processes killed at once (SIGKILL, while they may be saving) once a checkpoint past
    step 10 is on disk; the run resumes in one process and ends where an uninterrupted one ends."""
    from lmforge import checkpoint as ckpt

    extra = ("train.max_steps=60", "train.eval_every=5", "train.eval_batches=1")
    train(tmp_path / "whole", "train.grad_accum=2", *extra, corpus=corpus)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lmforge",
           "train", "--recipe", "quickstart", "--out", str(tmp_path / "killed"), "--json",
           *sets(corpus, "train.grad_accum=1", *extra)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    killed = tmp_path / "killed"
    while time.time() < deadline and p.poll() is None:
        if ckpt.is_checkpoint(killed) and (killed / "trainer_state.pt").exists() and ckpt.checkpoint_step(killed) >= 10:
            break
        time.sleep(0.02)
    workers = descendants(p.pid)  # torchrun starts its workers in sessions of their own
    for pid in [p.pid, *workers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.05)
    assert 10 <= ckpt.checkpoint_step(killed) < 60, "the run was not killed part-way"
    train(killed, "train.grad_accum=2")
    weights_match(killed, tmp_path / "whole")


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_finetune_runs_under_torchrun(tmp_path, lora):
    """`torchrun ... -m lmforge finetune` (full, and LoRA): process 0 writes the run and its report."""
    from tests.conftest import classifier_base

    data = classifier_base(tmp_path)
    done = lmforge(2, "finetune", str(tmp_path / "base"), "--task", "classify", "--data", str(data), "--epochs", "1",
                   "--out", str(tmp_path / "run"), "--json", *(["--lora-rank", "4"] if lora else []))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.stdout.count('"run_dir"') == 1 and 0.0 <= report["test"]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["steps"] == report["steps"] > 0

"""One measurement in a fresh process: `python -m bench.worker '<job json>'` prints one JSON line.

A fresh process per (peer, figure) makes peak memory honest: the process's high-water mark is
reset after the imports and the data (the baseline) and read at the end (see `peak_rss_mb`).
Anything the libraries print goes to stderr; stdout carries only the result.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import traceback


def _status_kb(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """The process's peak resident memory. Linux: VmHWM, which belongs to this process alone;
    `ru_maxrss` of a spawned child also carries the parent's resident size at the fork, so it can
    read high (it does here: the parent holds the probes' buffers). Elsewhere: ru_maxrss."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return kb / 1024


def reset_peak_mb() -> float:
    """Start the peak afresh from the current resident size where Linux allows it
    (/proc/self/clear_refs, "5"); return the baseline the peak is then measured from."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") / 1024
    except (OSError, TypeError):
        return peak_rss_mb()


def describe(e: BaseException) -> str:
    """`Type: first lines of the message`, short enough for a JSON field (inductor errors run long)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {' | '.join(lines[:3])}"[:500]


def run_job(job: dict) -> dict:
    import torch

    from bench import measure, tokens as data
    from bench.peers import Shape, build_peer

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    shape = Shape(**job["shape"])
    tokens = data.load(job["tokens_path"])
    if job["peer"].startswith("transformers"):
        import transformers  # noqa: F401  (imported before the baseline, like torch and lmforge)
        from transformers import GPT2LMHeadModel  # noqa: F401
    base_mb = reset_peak_mb()  # after the imports and the data: the delta is the model's doing
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def make_peer():
        torch.manual_seed(job["seed"])  # the same init for every run of a peer
        return build_peer(job["peer"], shape, device, job.get("nanogpt"))

    peer = make_peer()
    out: dict = {"params": peer.n_params(), "weight_bytes": peer.weight_bytes()}
    if hasattr(peer, "attention_backend"):
        out["attention"] = peer.attention_backend()
    task = job["task"]
    if task == "train":
        def train(p):
            return measure.train(p, tokens, job["dtype"], job["warmup"], job["windows"],
                                 job["steps_per_window"], job["seed"])
        if job.get("compile"):  # CUDA or --compile: every peer compiled; if compiling fails, say why, train eagerly
            try:
                peer.compile_for_training()
                out.update(train(peer), compiled=True)
            except Exception as e:  # inductor errors come in many types
                out.update(train(make_peer()), compiled=False, compile_error=describe(e))
        else:
            out.update(train(peer))
    elif task in ("greedy", "sample"):
        if hasattr(peer, "decode_step"):
            out["decode_step"] = peer.decode_step()
        batch = 1 if task == "greedy" else job.get("decode_batch") or shape.batch_size
        prompt = data.prompts(tokens, batch, job["prompt_tokens"], job["seed"])
        out.update(measure.decode(peer, prompt, job["new_tokens"], job["repeats"], task == "sample",
                                  job["temperature"], job["top_k"], job["seed"]))
    else:
        raise ValueError(f"unknown task {task!r}")
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_delta_mb"] = out["peak_rss_mb"] - base_mb
    out["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main() -> None:
    job = json.loads(sys.argv[1])
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result = {"ok": True, **run_job(job)}
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            result = {"ok": False, "error": describe(e)}
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()

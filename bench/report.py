"""From the workers' results to one JSON object and a readable table (keys: bench/README.md)."""

from __future__ import annotations

import statistics

SECTION_KEY = {"train": "train", "greedy": "decode_greedy", "sample": "decode_sample"}


def _median(xs):
    return statistics.median(xs) if xs else None


def _spread(xs):
    """(max - min) / median of the timed windows: how noisy a figure is."""
    return (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 else None


def gather(jobs) -> dict:
    """(section, peer label) -> the pooled windows of every round, the worst peak memory, the first
    round's loss curve, or the first error when no round succeeded."""
    cells: dict = {}
    for job in jobs:
        c = cells.setdefault((job.section, job.peer), {"rates": [], "first_call_s": []})
        r = job.result
        if not r.get("ok"):
            c.setdefault("error", r.get("error"))
            continue
        c["ok"] = True
        c["rates"] += r.get("rates", [])
        if "first_call_s" in r:
            c["first_call_s"].append(r["first_call_s"])
        for k in ("peak_rss_mb", "peak_rss_delta_mb", "peak_cuda_mb"):
            if k in r:
                c[k] = max(c.get(k, 0.0), r[k])
        for k in ("losses", "params", "weight_bytes", "attention", "decode_step", "threads", "compiled", "compile_error"):
            if k in r and k not in c:
                c[k] = r[k]
    for c in cells.values():
        if c.get("ok"):
            c.pop("error", None)
    return cells


def build(cells: dict, sections: list[str], probe: dict, model: dict, meta: dict, skipped: dict,
          precision_dtypes: tuple[str, str]) -> dict:
    out: dict = {"meta": meta, "probe": probe, "model": model}
    errors: dict = {}
    # the machine's best: the better of the probes taken before and after the measurements
    fp32 = max(probe["matmul_fp32_flops"], probe.get("matmul_fp32_flops_after", 0.0))
    copy = max(probe["copy_bytes_per_s"], probe.get("copy_bytes_per_s_after", 0.0))
    matmul = fp32 if meta["dtype"] == "float32" else probe.get("matmul_bf16_flops")
    mem_ceiling_1 = copy / model["weight_bytes"]  # batch 1: all weights per token
    fwd_flops = model["flops_per_token"] / 3  # forward only: a third of forward + backward
    ceilings = {"train_tokens_per_s_at_matmul_peak": matmul / model["flops_per_token"] if matmul else None,
                "matmul_flops_used": matmul, "copy_bytes_per_s_used": copy}
    for section in ("train", "greedy", "sample"):
        if section not in sections:
            continue
        key = SECTION_KEY[section]
        rows = {peer: c for (s, peer), c in cells.items() if s == section}
        rates = {p: _median(c["rates"]) if c.get("ok") else None for p, c in rows.items()}
        out[f"{key}_tokens_per_s"] = rates
        out.setdefault("spread", {})[key] = {p: _spread(c["rates"]) for p, c in rows.items() if c.get("ok")}
        out.setdefault("windows", {})[key] = {p: c["rates"] for p, c in rows.items() if c.get("ok")}
        out.setdefault("peak_rss_delta_mb", {})[key] = {p: c.get("peak_rss_delta_mb") for p, c in rows.items()}
        out.setdefault("peak_rss_mb", {})[key] = {p: c.get("peak_rss_mb") for p, c in rows.items()}
        if any("peak_cuda_mb" in c for c in rows.values()):
            out.setdefault("peak_cuda_mb", {})[key] = {p: c.get("peak_cuda_mb") for p, c in rows.items()}
        errors.update({f"{key}.{p}": c["error"] for p, c in rows.items() if "error" in c})
        if section == "train":
            out["train_mfu"] = {p: r * model["flops_per_token"] / matmul if r and matmul else None
                                for p, r in rates.items()}
            compile_errors = {p: c["compile_error"] for p, c in rows.items() if c.get("compile_error")}
            if compile_errors:
                out["train_compile_errors"] = compile_errors
        else:
            batch = 1 if section == "greedy" else meta["decode"]["sample_batch"]
            mem = mem_ceiling_1 * batch  # one read of the weights serves `batch` tokens
            ceilings[f"{key}_tokens_per_s"] = {"memory": mem, "compute": fp32 / fwd_flops}
            out[f"{key}_ceiling_fraction"] = {p: r / mem if r else None for p, r in rates.items()}
            out.setdefault("decode_first_call_s", {})[key] = {p: _median(c["first_call_s"])
                                                              for p, c in rows.items() if c.get("ok")}
        out.setdefault("ratio", {})[key] = {f"lmforge_over_{p}": rates["lmforge"] / r
                                            for p, r in rates.items() if p != "lmforge" and r and rates.get("lmforge")}
        mems = out["peak_rss_delta_mb"][key]
        out["ratio"][f"peak_rss_delta_{key}"] = {f"lmforge_over_{p}": mems["lmforge"] / m for p, m in mems.items()
                                                 if p != "lmforge" and m and mems.get("lmforge")}
    out["ceiling"] = ceilings
    if "precision" in sections and "precision" not in skipped:
        out["precision"] = precision(cells, precision_dtypes, probe, model, errors)
    out["skipped"] = skipped
    out["errors"] = errors
    first = ("meta", "probe", "model", "train_tokens_per_s", "train_mfu", "decode_greedy_tokens_per_s",
             "decode_greedy_ceiling_fraction", "decode_sample_tokens_per_s", "decode_sample_ceiling_fraction",
             "peak_rss_delta_mb", "ratio", "precision", "ceiling")
    return {**{k: out[k] for k in first if k in out}, **{k: v for k, v in out.items() if k not in first}}


def precision(cells: dict, dtypes: tuple[str, str], probe: dict, model: dict, errors: dict) -> dict:
    """The other dtype's lmforge training row beside the main dtype's: speed and the two loss curves."""
    main, other = dtypes

    def cell(dtype):
        c = cells.get(("precision", f"lmforge@{dtype}")) or {}
        if not c and dtype == main:  # the training section's lmforge row: same seed, steps and batches
            c = cells.get(("train", "lmforge")) or {}
        if "error" in c:
            errors[f"precision.{dtype}"] = c["error"]
        return c if c.get("ok") else None

    got = {d: cell(d) for d in (main, other)}
    rates = {d: _median(c["rates"]) if c else None for d, c in got.items()}
    curves = {d: c["losses"] for d, c in got.items() if c}
    n = min((len(v) for v in curves.values()), default=0)
    res = {"dtypes": [main, other], "train_tokens_per_s": rates,
           "peak_rss_delta_mb": {d: c.get("peak_rss_delta_mb") if c else None for d, c in got.items()},
           "loss_curve": {"step": list(range(1, n + 1)), **{d: v[:n] for d, v in curves.items()}}}
    if rates.get("bfloat16") and rates.get("float32"):
        res["speedup_bf16_over_fp32"] = rates["bfloat16"] / rates["float32"]
        if probe.get("matmul_bf16_flops"):
            res["mfu_bf16"] = rates["bfloat16"] * model["flops_per_token"] / probe["matmul_bf16_flops"]
    if len(curves) == 2 and n:
        a, b = curves["float32"][:n], curves["bfloat16"][:n]
        res["final_loss_gap_bf16_minus_fp32"] = b[-1] - a[-1]
        res["max_abs_loss_gap"] = max(abs(x - y) for x, y in zip(a, b))
    return res


# --- the table ---------------------------------------------------------------------------------------
def _num(x, fmt="{:,.1f}"):
    return "-" if x is None else fmt.format(x)


def _rows(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [line(headers), "  ".join("-" * w for w in widths), *map(line, rows)]


def table(out: dict) -> str:
    m, p, meta = out["model"], out["probe"], out["meta"]
    lines = [
        f"lmforge bench - {meta['device']} ({meta['cpu']}), {meta['threads']} threads, torch {meta['torch']}, "
        f"transformers {meta.get('transformers')}, {meta['dtype']}",
        f"model: {m['params']:,} parameters, {m['flops_per_token'] / 1e6:.1f} MFLOP per training token, "
        f"{m['weight_bytes'] / 1e6:.1f} MB of weights; data: {meta['data']['kind']}",
        f"probe (before / after the run): matmul fp32 {p['matmul_fp32_flops'] / 1e9:.1f} / "
        f"{p.get('matmul_fp32_flops_after', 0) / 1e9:.1f} GFLOP/s, copy {p['copy_bytes_per_s'] / 1e9:.1f} / "
        f"{p.get('copy_bytes_per_s_after', 0) / 1e9:.1f} GB/s, "
        f"bf16/fp32 matmul {p['bf16_speedup']:.2f}x"
        + (f" ({p['matmul_bf16_flops'] / 1e9:.1f} GFLOP/s)" if p.get("matmul_bf16_flops") else ""),
    ]
    if meta.get("lmforge_decode_step"):
        lines.append(f"lmforge's decode steps: {meta['lmforge_decode_step']}")
    specs = [("train", "training tokens/s (forward + backward + AdamW)", "MFU", "train_mfu"),
             ("decode_greedy", "greedy decode, batch 1", "of mem. ceiling", "decode_greedy_ceiling_fraction"),
             ("decode_sample", f"sampled decode, batch {meta['decode']['sample_batch']}", "of mem. ceiling",
              "decode_sample_ceiling_fraction")]
    for key, title, frac_name, frac_key in specs:
        rates = out.get(f"{key}_tokens_per_s")
        if not rates:
            continue
        ceiling = out["ceiling"].get(f"{key}_tokens_per_s")
        extra = f"; memory ceiling {ceiling['memory']:,.0f}, compute ceiling {ceiling['compute']:,.0f}" if ceiling else ""
        lines += ["", f"{title}{extra}"]
        rows = []
        for peer, r in rates.items():
            ratio = out["ratio"][key].get(f"lmforge_over_{peer}")
            rows.append([peer, _num(r), _num(out["spread"][key].get(peer), "{:.0%}"),
                         _num(out[frac_key].get(peer), "{:.1%}"),
                         _num(out.get("decode_first_call_s", {}).get(key, {}).get(peer), "{:.1f}"),
                         _num(out["peak_rss_delta_mb"][key].get(peer), "{:,.0f}"),
                         _num(ratio, "{:.2f}x") if peer != "lmforge" else ""])
        lines += _rows(["peer", "tokens/s", "spread", frac_name, "1st call s", "peak RSS +MB", "lmforge / peer"], rows)
    prec = out.get("precision")
    if prec:
        rates = prec["train_tokens_per_s"]
        lines += ["", "precision: lmforge training, same init and batches"
                  + (f"; bf16 {prec['speedup_bf16_over_fp32']:.2f}x fp32" if "speedup_bf16_over_fp32" in prec else "")]
        curve = prec["loss_curve"]
        n = len(curve["step"])
        marks = sorted({i for i in (0, n // 4, n // 2, 3 * n // 4, n - 1) if 0 <= i < n})
        headers = ["dtype", "tokens/s", *[f"loss@{curve['step'][i]}" for i in marks]]
        rows = [[d, _num(rates.get(d)), *[_num(curve[d][i], "{:.4f}") if d in curve else "-" for i in marks]]
                for d in prec["dtypes"]]
        lines += _rows(headers, rows)
    for title, items in (("skipped", out["skipped"]), ("errors", out["errors"])):
        if items:
            lines += ["", f"{title}:"] + [f"  {k}: {v}" for k, v in items.items()]
    if out.get("warnings"):
        lines += ["", "warnings:"] + [f"  {w}" for w in out["warnings"]]
    return "\n".join(lines)

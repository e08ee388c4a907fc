"""What a generation request needs in memory, estimated before anything is allocated, so that a
request that cannot fit is refused in one sentence instead of ending the process.

For N rows decoded together (prompts x num_samples, or prompts x num_beams) with a cache of S slots
(the longest prompt + max_new_tokens, at most the context):

    KV cache      2 x n_layer x N x n_kv_head x S x head_dim x bytes per value
    candidates    N x vocab x 4 bytes, about four times over (logits, filtered logits,
                  probabilities, cumulative sums; beam search: log-probabilities and scores)
    bookkeeping   N x S x (8 + 1) bytes (token histories, key masks)
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lmforge.errors import LmforgeError

GIB = 2 ** 30
COPIES = 4  # (N, vocab) float32 tensors alive at once while a token is chosen
HEADROOM = 0.9  # of the memory free now, the most a request may plan to use


def cache_slots(model: nn.Module, longest_prompt: int, max_new_tokens: int) -> int:
    """Slots the KV cache needs: the prompt and every new token, never more than the context (an
    encoder-decoder's decoder caches its start token and the new tokens; the source is cached apart)."""
    prompt = 1 if model.config.family == "seq2seq" else longest_prompt
    return max(1, min(model.config.context_length, prompt + max_new_tokens))


def estimate(model: nn.Module, rows: int, slots: int, source: int = 0) -> tuple[int, int]:
    """(KV cache bytes, everything else) for `rows` rows and `slots` cache slots; an encoder-decoder
    model also keeps each decoder layer's cross-attention keys and values of a `source`-token source."""
    cfg = model.config
    p = next(model.parameters())
    per_slot = 2 * rows * cfg.n_kv_head * cfg.head_dim * p.element_size()
    if cfg.family == "seq2seq":
        kv = per_slot * cfg.n_decoder_layer * (slots + source)
    else:
        kv = per_slot * cfg.n_layer * slots
    other = rows * cfg.vocab_size * 4 * COPIES + rows * slots * 9
    return kv, other


def free_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated on `device` now (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(model: nn.Module, prompts: int, longest_prompt: int, max_new_tokens: int,
               per_prompt: int, beams: bool) -> None:
    """Refuse a request whose cache and candidates would not fit in the memory free now."""
    rows, slots = prompts * per_prompt, cache_slots(model, longest_prompt, max_new_tokens)
    kv, other = estimate(model, rows, slots, longest_prompt)
    device = next(model.parameters()).device
    free = free_memory(device)
    if free is None or kv + other <= HEADROOM * free:
        return
    field = "num_beams" if beams else "num_samples" if per_prompt > 1 else "max_new_tokens"
    what = f"{per_prompt} {'beams' if beams else 'samples'} of {prompts} prompt{'s' * (prompts > 1)}"
    error = LmforgeError(
        f"decoding {what} ({rows:,} rows of up to {slots:,} tokens) needs ~{(kv + other) / GIB:,.1f} GiB "
        f"(~{kv / GIB:,.1f} GiB for the KV cache, ~{other / GIB:,.1f} GiB for the candidates) but ~{free / GIB:,.1f} GiB "
        f"is free on {device.type}; lower {field}" + (" or send fewer prompts at once" if prompts > 1 else ""))
    error.field = field  # the setting to change, for a front door that names it its own way
    raise error

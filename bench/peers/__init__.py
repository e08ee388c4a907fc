"""The peers: one adapter module each, built by name so a worker imports only what it runs."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.peers.base import Peer, Shape

# name -> what it measures; "transformers_static_compiled" runs only the decoding rows, "lmforge_compiled"
# (torch.compile over lmforge's own decode step, beside its native step) only the greedy one
NAMES = ("lmforge", "transformers", "transformers_static_compiled", "nanogpt", "lmforge_compiled")


def build_peer(name: str, shape: Shape, device: torch.device, nanogpt_model_py: str | None = None) -> Peer:
    if name == "lmforge":
        from bench.peers.lmforge_peer import LmforgePeer

        return LmforgePeer(shape, device)
    if name == "lmforge_compiled":
        from bench.peers.lmforge_peer import LmforgeCompiledPeer

        return LmforgeCompiledPeer(shape, device)
    if name in ("transformers", "transformers_static_compiled"):
        from bench.peers.hf_peer import HFPeer

        return HFPeer(shape, device, static_compiled=name == "transformers_static_compiled")
    if name == "nanogpt":
        from bench.peers.nanogpt_peer import NanoGPTPeer

        if not nanogpt_model_py:
            raise ValueError("nanoGPT needs --nanogpt PATH (or NANOGPT_DIR) pointing to a folder with model.py")
        return NanoGPTPeer(shape, device, Path(nanogpt_model_py))
    raise ValueError(f"unknown peer {name!r}; use one of {', '.join(NAMES)}")


__all__ = ["NAMES", "Peer", "Shape", "build_peer"]

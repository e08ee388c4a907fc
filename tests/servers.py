"""Starting an lmforge app for a test: uvicorn on a free port of 127.0.0.1, in a thread, always stopped."""

import socket
import threading
import time

import torch
import uvicorn

from lmforge.checkpoint import save_checkpoint
from lmforge.config import model_config_from_preset
from lmforge.models import build_model
from lmforge.tokenizer import train_bpe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(app):
    """Start `app` on a free port of 127.0.0.1 in a thread; returns (base url, stop function)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "the server did not start"
        time.sleep(0.01)

    def stop():
        server.should_exit = True
        thread.join(timeout=30)
    return f"http://127.0.0.1:{port}", stop


def tiny_run(out, text: list[str], context: int = 64):
    """A 2-layer GPT (random weights, a BPE tokenizer of `text`) saved as a run at `out`."""
    tok = train_bpe(text, 300)
    torch.manual_seed(0)
    cfg = model_config_from_preset("gpt-small", vocab_size=tok.vocab_size, context_length=context, n_layer=2, n_head=2,
                                   d_model=32, d_ff=64, dropout=0.0)
    save_checkpoint(out, build_model(cfg), tok)
    return out

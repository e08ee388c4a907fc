"""The benchmark's peers train through torch.compile as they do on a GPU (`--compile` on the CPU)."""

import pytest
import torch

from bench.peers import Shape, build_peer

TINY = Shape(n_layer=1, n_head=2, d_model=32, vocab_size=64, context_length=16, batch_size=2)


@pytest.mark.parametrize("name", ["lmforge", "transformers"])
def test_a_compiled_peer_trains_like_the_eager_one(name):
    pytest.importorskip("transformers")
    x, y = torch.randint(0, TINY.vocab_size, (2, TINY.batch_size, TINY.context_length))
    losses = []
    for compile_it in (False, True):
        torch.manual_seed(0)
        peer = build_peer(name, TINY, torch.device("cpu"))
        if compile_it:
            peer.compile_for_training()
        loss = peer.loss(x, y)
        loss.backward()
        assert all(p.grad is not None for p in peer.model.parameters())
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)

"""The benchmark: its peers train through torch.compile as they do on a GPU (`--compile` on the CPU), and its
counts are refused below their least before anything runs."""

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


@pytest.mark.parametrize("flags", [["--decode-batch", "0"], ["--rounds", "0"], ["--new-tokens", "-1"], ["--steps", "x"],
                                   ["--warmup", "-1"]])
def test_counts_below_their_least_are_refused_before_anything_runs(flags, capsys):
    from bench.__main__ import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(flags)
    assert e.value.code == 2 and flags[0] in capsys.readouterr().err
    assert parse_args(["--warmup", "0", "--decode-batch", "32"]).decode_batch == 32


def test_transformers_fill_after_eos_is_not_counted_as_generated():
    from bench.seq2seq import generated

    # start token 0, EOS 3: transformers fills a beam that finished early with EOS (or pad) to the batch's length
    assert generated([0, 63, 18, 3, 3, 3, 3], eos=3, pad=0) == [63, 18, 3]
    assert generated([0, 63, 18, 3, 0, 0], eos=3, pad=0) == [63, 18, 3]
    assert generated([0, 63, 18, 287], eos=3, pad=0) == [63, 18, 287]  # cut by max_new_tokens: all counted

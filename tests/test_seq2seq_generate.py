"""Encoder-decoder decoding against transformers' `generate`: for random T5, BART and Marian models loaded
from their own directories, greedy and beam search (length penalty, early stopping, the n-gram ban) give
the same tokens, token for token, over a batch with a padded source."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmforge.config import GenerateConfig  # noqa: E402
from lmforge.generate import Engine  # noqa: E402
from lmforge.models import hf  # noqa: E402
from tests.test_hf_seq2seq import EOS, PAD, hf_seq2seq_model  # noqa: E402

SOURCES = [[5, 17, 33, 8, 41, 12, 9, 27, 50], [44, 7, 19, 61]]


def theirs(ref, **settings) -> list[list[int]]:
    """transformers' outputs without the decoder's start token, cut after the first end token."""
    s = max(map(len, SOURCES))
    ids = torch.tensor([r + [PAD] * (s - len(r)) for r in SOURCES])
    mask = torch.tensor([[1] * len(r) + [0] * (s - len(r)) for r in SOURCES])
    with torch.no_grad():
        # use_cache=False: transformers sizes its cache by the encoder's layer count (2 here, the decoder has 3)
        out = ref.generate(input_ids=ids, attention_mask=mask, do_sample=False, eos_token_id=EOS, pad_token_id=PAD,
                           use_cache=False, forced_eos_token_id=None,  # BART / Marian force an end token at the
                           # length limit by default: a rule of their configs, not of the search compared here
                           **settings)
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[:row.index(EOS) + 1] if EOS in row else row)
    return rows


CASES = {
    "greedy": (dict(max_new_tokens=10, num_beams=1), dict(max_new_tokens=10, temperature=0.0)),
    "beams": (dict(max_new_tokens=10, num_beams=4, early_stopping=True, length_penalty=1.0),
              dict(max_new_tokens=10, num_beams=4, early_stopping=True, length_penalty=1.0)),
    "beams-penalised": (dict(max_new_tokens=12, num_beams=3, early_stopping=False, length_penalty=0.6,
                             no_repeat_ngram_size=2),
                        dict(max_new_tokens=12, num_beams=3, early_stopping=False, length_penalty=0.6,
                             no_repeat_ngram_size=2)),
}


@pytest.mark.parametrize("backend", ["auto", "torch"])  # auto: beams share their histories (compiled attention)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["t5-v1.0", "t5-v1.1", "mt5", "bart", "marian"])
def test_decoding_matches_transformers_generate(kind, case, backend, tmp_path):
    ref = hf_seq2seq_model(kind).eval()
    ref.save_pretrained(tmp_path)
    ours = hf.load_hf(tmp_path)
    hf_settings, our_settings = CASES[case]
    want = theirs(ref, **hf_settings)
    got = Engine(ours, backend).generate(SOURCES, GenerateConfig(stop_ids=(EOS,), **our_settings))
    assert got == want

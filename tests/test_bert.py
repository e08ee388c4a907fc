"""BERT, ELECTRA and the task heads: shapes, padding, tied and shared weights, the losses by hand."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import PRESETS, model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.models import build_model
from lmforge.objectives.classify import balanced_class_weights, sequence_loss, span_loss
from lmforge.objectives.mlm import mlm_loss
from lmforge.objectives.rtd import rtd_loss

TINY = dict(vocab_size=50, context_length=16, n_layer=2, d_model=32, n_head=4, dropout=0.0)


def tiny(preset="bert-mini", **kw):
    torch.manual_seed(0)
    return build_model(model_config_from_preset(preset, **{**TINY, **kw})).eval()


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if PRESETS[p].get("family") in ("bert", "electra")))
def test_encoder_presets_build_small_and_see_both_ways(preset):
    model = tiny(preset)
    ids = torch.randint(0, 50, (1, 10))
    ids2 = ids.clone()
    ids2[0, -1] = (ids[0, -1] + 1) % 50
    # bidirectional: changing the last token changes the first position's state
    assert not torch.allclose(model(ids)[0, 0], model(ids2)[0, 0])
    assert model(ids).shape == (1, 10, 32)


def test_padding_is_invisible_and_segments_matter():
    model = tiny()
    ids = torch.randint(5, 50, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    h = model(ids, attention_mask=mask)
    alone = model(ids[1:, :6])
    assert torch.allclose(h[1, :6], alone[0], atol=1e-5)
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    assert not torch.allclose(model(ids, types), model(ids))


def test_mlm_head_is_tied_to_the_token_embeddings():
    model = tiny()
    assert model.mlm_head.tok[0].weight is model.embeddings.tok.weight
    assert "mlm_head.decoder.weight" not in model.state_dict()


def test_mlm_and_nsp_loss_by_hand():
    model = tiny()
    ids = torch.randint(5, 50, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5] = 7, 9
    nsp = torch.tensor([0, 1])
    loss, stats = mlm_loss(model, {"input_ids": ids, "labels": labels, "next_sentence_label": nsp})
    h = model(ids)
    logits = model.mlm_logits(h)
    by_hand = (F.cross_entropy(logits[0, 2:3], torch.tensor([7])) + F.cross_entropy(logits[1, 5:6], torch.tensor([9]))) / 2
    by_hand = by_hand + F.cross_entropy(model.nsp_logits(h), nsp)
    assert torch.allclose(loss, by_hand, atol=1e-5)
    assert int(stats["mlm_count"]) == 2 and int(stats["nsp_count"]) == 2


def test_electra_shares_embeddings_and_its_generator_is_a_quarter_wide():
    model = tiny("electra-mini")
    assert model.generator.embeddings is model.discriminator.embeddings
    assert model.generator.config.d_model == 8 and model.generator.config.n_head == 1
    assert model.generator.embed_proj.weight.shape == (8, 32)


def test_rtd_loss_labels_replacements_and_skips_padding():
    model = tiny("electra-mini")
    torch.manual_seed(1)
    ids = torch.randint(5, 50, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    masked = ids.clone()
    masked[:, 3] = 4  # the [MASK] id here
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 8:] = False
    loss, stats = rtd_loss(model, {"input_ids": masked, "labels": labels, "attention_mask": mask},
                           torch.Generator().manual_seed(0))
    assert int(stats["rtd_count"]) == 18  # real tokens only
    assert int(stats["replaced_count"]) <= 2  # only the masked position can differ, in each row
    loss.backward()
    assert model.generator.blocks[0].attn.qkv.weight.grad is not None
    assert model.rtd_head.out.weight.grad is not None


@pytest.mark.parametrize("preset", ["bert-mini", "electra-mini", "gpt-mini"])
def test_classification_head_over_every_family(preset):
    model = tiny(preset, head="classify", labels=["neg", "pos", "neutral"])
    ids = torch.randint(5, 50, (3, 7))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, 4:] = False
    logits = model(ids, attention_mask=mask)
    assert logits.shape == (3, 3)
    # the padded row's answer is the same as the row alone
    alone = model(ids[2:, :4], attention_mask=mask[2:, :4])
    assert torch.allclose(logits[2], alone[0], atol=1e-5)


@pytest.mark.parametrize("preset", ["bert-mini", "electra-mini"])
def test_a_batch_without_padding_takes_the_fused_path_and_padding_keeps_its_mask(preset, monkeypatch):
    model = tiny(preset, head="classify", labels=["a", "b"])
    masks = []  # the attn_mask each attention call hands the fused kernel
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, attn_mask=None, **kw: masks.append(attn_mask) or sdpa(*a, attn_mask=attn_mask, **kw))
    ids = torch.randint(5, 50, (3, 9))
    full = model(ids, attention_mask=torch.ones_like(ids))
    assert masks and all(m is None for m in masks)
    assert torch.equal(full, model(ids))  # all ones is no mask at all, bit for bit
    masks.clear()
    lengths = [9, 4, 6]
    pad = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    padded = model(ids, attention_mask=pad)
    assert masks and all(m is not None for m in masks)
    for row, n in enumerate(lengths):  # each padded row scores as it does alone, unpadded
        alone = model(ids[row:row + 1, :n], attention_mask=torch.ones(1, n, dtype=torch.bool))
        assert torch.allclose(padded[row], alone[0], atol=1e-5)


def test_qa_head_and_span_loss():
    model = tiny(head="qa")
    ids = torch.randint(5, 50, (2, 9))
    batch = {"input_ids": ids, "start_positions": torch.tensor([3, 4]), "end_positions": torch.tensor([5, 4])}
    loss, logits = span_loss(model, batch)
    assert logits.shape == (2, 9, 2)
    expect = (F.cross_entropy(logits[..., 0], batch["start_positions"]) +
              F.cross_entropy(logits[..., 1], batch["end_positions"])) / 2
    assert torch.allclose(loss, expect)


def test_balanced_class_weights_by_hand():
    # 6 rows of class 0, 2 of class 1: w = 8 / (2 * 6) and 8 / (2 * 2)
    assert torch.allclose(balanced_class_weights([6, 2]), torch.tensor([8 / 12, 2.0]))
    model = tiny(head="classify", labels=["a", "b"])
    batch = {"input_ids": torch.randint(5, 50, (4, 5)), "labels": torch.tensor([0, 0, 0, 1])}
    w = torch.tensor([1.0, 3.0])
    loss, logits = sequence_loss(model, batch, w)
    nll = -torch.log_softmax(logits, -1)[torch.arange(4), batch["labels"]]
    assert torch.allclose(loss, (nll * w[batch["labels"]]).sum() / w[batch["labels"]].sum(), atol=1e-6)


def test_head_configs_are_checked():
    with pytest.raises(LmforgeError, match="at least two labels"):
        model_config_from_preset("bert-mini", head="classify", labels=["only"])
    with pytest.raises(LmforgeError, match="causal=false"):
        model_config_from_preset("bert-mini", causal=True)


def test_fine_tuned_checkpoint_round_trips(tmp_path):
    from lmforge.tokenizer import train_char
    from lmforge.checkpoint import load_checkpoint, save_checkpoint

    model = tiny(head="classify", labels=["x", "y"])
    save_checkpoint(tmp_path, model, train_char(["abc"]))
    loaded, _ = load_checkpoint(tmp_path)
    ids = torch.randint(5, 50, (2, 6))
    assert loaded.config.labels == ["x", "y"]
    assert torch.equal(loaded(ids), model(ids))

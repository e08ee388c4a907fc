"""Hugging Face interop for encoder-decoders: tiny random `transformers` T5 (v1.0 and v1.1), BART and Marian
models load into lmforge's Seq2Seq with the same logits over a padded source batch; lmforge encoder-decoders
(the presets' shapes too) export to directories AutoModelForSeq2SeqLM loads the same way; shapes no format
holds and absurd config.json values are refused in one sentence naming the setting.

`hf_seq2seq_model(kind)` builds each tiny transformers model (kinds: HF_KINDS) for other tests to reuse,
e.g. generation parity: `ref = hf_seq2seq_model("bart"); ref.save_pretrained(path); hf.load_hf(path)`."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.api import LM, export_hf  # noqa: E402
from lmforge.config import ModelConfig, model_config_from_preset  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.models import build_model, hf  # noqa: E402
from lmforge.models.seq2seq import Seq2Seq  # noqa: E402
from lmforge.tokenizer import train_bpe  # noqa: E402
from tests.test_hostile_configs import refused_quickly  # noqa: E402

V = 120  # vocabulary of the tiny transformers models
PAD, EOS = 1, 2
TEXT = "The quick brown fox jumps over the lazy dog. A second sentence follows the first one here. " * 20
HF_KINDS = ("t5-v1.0", "t5-v1.1", "mt5", "t5-v1.0-untied", "bart", "bart-untied", "marian", "marian-untied")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights (and final_logits_bias) far from their init, so a wrong mapping shows; Marian's fixed
    sinusoidal tables stay as they are (transformers rebuilds them on load, never saves them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        biases = [(n, b) for n, b in model.named_buffers() if n.endswith("final_logits_bias")]
        for name, p in [*model.named_parameters(), *biases]:
            if "embed_positions" in name and isinstance(model, transformers.MarianMTModel):
                continue
            p.add_(torch.randn(p.shape, generator=g) * (1.0 if name.endswith("final_logits_bias") else 0.1))
    return model.eval()


def hf_seq2seq_model(kind: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random transformers encoder-decoder of `kind` (HF_KINDS): 32 wide, 4 heads, 2 encoder and 3
    decoder layers, vocabulary V, pad PAD, eos EOS; `overrides` go to its config. *-untied: lm_head its
    own tensor (T5 v1.1 always; t5-v1.0-untied: one that T5 still scales by d_model**-0.5)."""
    torch.manual_seed(seed)
    ids = dict(vocab_size=V, pad_token_id=PAD, eos_token_id=EOS)
    if kind in ("t5-v1.0", "t5-v1.0-untied", "t5-v1.1", "mt5"):
        v11 = kind in ("t5-v1.1", "mt5")  # mT5 is T5 v1.1's shape under its own model_type
        config_cls, model_cls = (transformers.MT5Config, transformers.MT5ForConditionalGeneration) if kind == "mt5" \
            else (transformers.T5Config, transformers.T5ForConditionalGeneration)
        cfg = config_cls(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=3,
                         relative_attention_num_buckets=8, relative_attention_max_distance=20,
                         feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11,
                         decoder_start_token_id=PAD, **{**ids, **overrides})
        model = model_cls(cfg)
    else:
        base = kind.removesuffix("-untied")
        cls = {"bart": transformers.BartConfig, "marian": transformers.MarianConfig}[base]
        shape = dict(d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
                     encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
        if base == "bart":  # BART starts the decoder from eos; layernorm_embedding; here, scaled embeddings
            shape.update(decoder_start_token_id=EOS, bos_token_id=0, scale_embedding=True)
        else:  # opus-mt's choices: swish, scaled embeddings, the decoder starting from pad
            shape.update(decoder_start_token_id=PAD, activation_function="swish", scale_embedding=True)
        cfg = cls(**shape, tie_word_embeddings=not kind.endswith("untied"), **{**ids, **overrides})
        model = (transformers.BartForConditionalGeneration if base == "bart" else transformers.MarianMTModel)(cfg)
    model = randomize(model, seed)
    if kind.endswith("untied") or kind in ("t5-v1.1", "mt5"):  # transformers 5 ties T5's lm_head whatever the config says
        with torch.no_grad():
            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight + 0.1 * torch.randn(V, 32))
    if kind in ("bart-untied", "marian-untied"):  # transformers 5 unties the stacks' embeddings too: keep them one
        with torch.no_grad():
            for stack in (model.model.encoder, model.model.decoder):
                stack.embed_tokens.weight.copy_(model.model.shared.weight)
    return model


def batch(vocab: int = V, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids (2, 12), the second row padded after 7 (its mask False there), and decoder inputs (2, 9)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (2, 12), generator=g)
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 7:] = False
    src[1, 7:] = PAD
    return src, mask, torch.randint(3, vocab, (2, 9), generator=g)


def max_diff(ref: torch.nn.Module, ours: torch.nn.Module, vocab: int = V) -> float:
    src, mask, tgt = batch(vocab)
    with torch.no_grad():
        theirs = ref(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        mine = ours(src, tgt, mask)
    assert theirs.shape == mine.shape
    return (theirs - mine).abs().max().item()


# --- import ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_checkpoint_loads_with_same_logits(kind, tmp_path):
    ref = hf_seq2seq_model(kind)
    ref.save_pretrained(tmp_path)
    ours = hf.load_hf(tmp_path)
    cfg = ours.config
    assert isinstance(ours, Seq2Seq) and not ours.training
    assert (cfg.n_layer, cfg.n_decoder_layer, cfg.d_model, cfg.n_head, cfg.vocab_size) == (2, 3, 32, 4, V)
    assert cfg.tie_embeddings == (not kind.endswith("untied") and kind not in ("t5-v1.1", "mt5"))
    assert cfg.decoder_start_id == ref.config.decoder_start_token_id
    assert cfg.activation == {"t5-v1.0": "relu", "t5-v1.1": "geglu", "mt5": "geglu", "bart": "gelu", "marian": "silu"}[
        kind.removesuffix("-untied")]
    assert max_diff(ref, ours) < 1e-4


def test_bare_bart_model_without_prefix_or_logits_bias(tmp_path):
    ref = hf_seq2seq_model("bart")
    ref.model.save_pretrained(tmp_path)  # BartModel: names without "model.", no final_logits_bias, no lm_head
    ours, fresh = hf.read_model(tmp_path)
    assert fresh == ["final logits bias"] and torch.equal(ours.final_logits_bias, torch.zeros(V))
    src, mask, tgt = batch()
    with torch.no_grad():
        theirs = ref.model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).last_hidden_state
        assert (theirs - ours(src, tgt, mask, features_only=True)).abs().max().item() < 1e-4


# --- export ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([TEXT], vocab_size=300)


def lmforge_seq2seq(kind: str, vocab: int) -> torch.nn.Module:
    """A random lmforge encoder-decoder: a preset's shape (t5-mini, bart-mini, transformer-base in Marian's
    layout, made small) or a variant each format holds."""
    small = dict(n_layer=2, n_decoder_layer=3, d_model=64, n_head=4, d_ff=128, context_length=64)
    specs = {
        "t5-mini": ("t5-mini", {}),
        "t5-v1.1-untied": ("t5-mini", dict(small, activation="geglu", tie_embeddings=False, tied_output_scale=False)),
        "t5-tied-unscaled-swiglu": ("t5-mini", dict(small, activation="swiglu", tied_output_scale=False)),
        "t5-scaled-scores": ("t5-mini", dict(small, attention_scale=None, activation="gelu")),
        "bart-mini": ("bart-mini", {}),
        "bart-untied-silu": ("bart-mini", dict(small, tie_embeddings=False, activation="silu", embed_scale=True)),
        "marian": ("transformer-base", dict(small, sinusoidal_layout="halves", logits_bias=True)),
        "marian-untied-scaled": ("transformer-base", dict(small, sinusoidal_layout="halves", tie_embeddings=False,
                                                          activation="gelu_tanh", attention_scale=0.3)),
    }
    preset, change = specs[kind]
    torch.manual_seed(0)
    return randomize(build_model(model_config_from_preset(preset, vocab_size=vocab, decoder_start_id=PAD, **change)))


EXPORTS = {"t5-mini": "T5ForConditionalGeneration", "t5-v1.1-untied": "T5ForConditionalGeneration",
           "t5-tied-unscaled-swiglu": "T5ForConditionalGeneration", "t5-scaled-scores": "T5ForConditionalGeneration",
           "bart-mini": "BartForConditionalGeneration", "bart-untied-silu": "BartForConditionalGeneration",
           "marian": "MarianMTModel", "marian-untied-scaled": "MarianMTModel"}


@pytest.mark.parametrize("kind", EXPORTS)
def test_export_loads_in_transformers_with_same_logits(kind, tokenizer, tmp_path):
    model = lmforge_seq2seq(kind, tokenizer.vocab_size)
    out = export_hf(LM(model, tokenizer), tmp_path / "hf")
    ref = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert type(ref).__name__ == EXPORTS[kind] == json.loads((out / "config.json").read_text())["architectures"][0]
    assert max_diff(ref, model, tokenizer.vocab_size) < 1e-4
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["decoder_start_token_id"] == PAD == ref.generation_config.decoder_start_token_id
    assert generation["eos_token_id"] == tokenizer.eos_id and generation["pad_token_id"] == tokenizer.pad_id
    back = hf.load_hf(out)  # round trip: the same network (a folded score scale is now in W_q)
    assert max_diff(ref, back, tokenizer.vocab_size) < 1e-4
    if kind in ("t5-mini", "bart-mini", "marian"):
        mine, theirs = model.state_dict(), back.state_dict()
        assert back.config == model.config and mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_export_writes_a_tokenizer_that_makes_the_models_inputs(tokenizer, tmp_path):
    model = lmforge_seq2seq("bart-mini", tokenizer.vocab_size)
    out = export_hf(LM(model, tokenizer), tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "The lazy dog follows the quick fox."
    enc = hf_tok([text, "A fox."], padding=True, return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"}  # no token_type_ids, which a seq2seq forward refuses
    assert enc["input_ids"][0].tolist() == tokenizer.encode(text) and hf_tok.pad_token_id == tokenizer.pad_id
    ref = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tgt = torch.full((2, 1), PAD)
    with torch.no_grad():
        theirs = ref(**enc, decoder_input_ids=tgt).logits
        mine = model(enc["input_ids"], tgt, enc["attention_mask"].bool())
    assert (theirs - mine).abs().max().item() < 1e-4
    lm = lmforge.load(out, device="cpu")  # the front door reads it back too
    assert isinstance(lm.model, Seq2Seq) and lm.tokenizer.encode(text) == tokenizer.encode(text)


# --- refused -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each kind saved by transformers once, for the tests below to copy and edit."""
    root = tmp_path_factory.mktemp("saved")
    for kind in ("t5-v1.0", "bart", "marian"):
        hf_seq2seq_model(kind).save_pretrained(root / kind)
    return root


def edited(saved, kind: str, dest, change: dict):
    shutil.copytree(saved / kind, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **change}))
    return dest


@pytest.mark.parametrize("kind, change, words", [
    ("t5-v1.0", {"d_kv": 16}, ["d_kv=16", "num_heads=4", "d_model=32"]),
    ("t5-v1.0", {"feed_forward_proj": "gated-tanh"}, ["feed_forward_proj='gated-tanh'"]),
    ("t5-v1.0", {"feed_forward_proj": "mish"}, ["feed_forward_proj='mish'"]),
    ("t5-v1.0", {"decoder_start_token_id": 500}, ["decoder_start_token_id=500"]),
    ("bart", {"decoder_ffn_dim": 128}, ["decoder_ffn_dim=128", "encoder_ffn_dim=64"]),
    ("bart", {"decoder_attention_heads": 2}, ["decoder_attention_heads=2", "encoder_attention_heads=4"]),
    ("bart", {"normalize_before": True}, ["normalize_before=True"]),
    ("bart", {"activation_function": "tanh"}, ["activation_function='tanh'"]),
    ("marian", {"share_encoder_decoder_embeddings": False}, ["share_encoder_decoder_embeddings"]),
    ("marian", {"decoder_vocab_size": 50}, ["decoder_vocab_size=50"]),
])
def test_unsupported_hf_configs_are_refused_naming_the_setting(kind, change, words, saved, tmp_path):
    refused_quickly(lambda: hf.load_hf(edited(saved, kind, tmp_path / kind, change)), *words)


@pytest.mark.parametrize("kind, change, words", [
    ("t5-v1.0", {"num_layers": 10**6}, ["num_layers=1000000"]),
    ("t5-v1.0", {"num_decoder_layers": 10**6}, ["num_decoder_layers=1000000"]),
    ("t5-v1.0", {"d_model": "32"}, ["d_model='32'"]),
    ("t5-v1.0", {"relative_attention_num_buckets": 0}, ["relative_attention_num_buckets=0"]),
    ("t5-v1.0", {"layer_norm_epsilon": -1}, ["layer_norm_epsilon=-1"]),
    ("t5-v1.0", {"vocab_size": 2 * 10**9}, ["vocab_size=2000000000"]),
    ("bart", {"decoder_layers": 10**6}, ["decoder_layers=1000000"]),
    ("bart", {"decoder_ffn_dim": 10**9}, ["decoder_ffn_dim=1000000000"]),
    ("bart", {"encoder_ffn_dim": -1}, ["encoder_ffn_dim=-1"]),
    ("bart", {"scale_embedding": "yes"}, ["scale_embedding='yes'"]),
    ("marian", {"max_position_embeddings": 1.5}, ["max_position_embeddings=1.5"]),
    ("marian", {"encoder_layers": 4000, "d_model": 65536, "encoder_attention_heads": 4,
                "decoder_attention_heads": 4}, ["parameters"]),
    # plausible, but not what the file holds: refused from the safetensors header before allocating
    ("t5-v1.0", {"num_decoder_layers": 3000}, ["no tensor decoder.block.3."]),
    ("bart", {"d_model": 4096, "encoder_ffn_dim": 16384, "decoder_ffn_dim": 16384}, ["not match", "4096"]),
    ("bart", {"max_position_embeddings": 2**20}, ["not match", "positions.weight"]),
])
def test_absurd_hf_configs_are_refused_quickly_naming_their_key(kind, change, words, saved, tmp_path):
    path = edited(saved, kind, tmp_path / kind, change)
    refused_quickly(lambda: hf.load_hf(path), *words)


def test_a_stray_tensor_is_refused(saved, tmp_path):
    path = edited(saved, "marian", tmp_path / "marian", {})
    sd = load_file(str(path / "model.safetensors"))
    sd["model.encoder.layers.0.extra.weight"] = torch.zeros(2)
    save_file(sd, str(path / "model.safetensors"))
    refused_quickly(lambda: hf.load_hf(path), "model.encoder.layers.0.extra.weight")


@pytest.mark.parametrize("preset, change, word", [
    ("t5-mini", dict(bias=True), "model.bias=True"),
    ("t5-mini", dict(embed_scale=True), "model.embed_scale=True"),
    ("t5-mini", dict(n_kv_head=2), "model.n_kv_head=2"),
    ("bart-mini", dict(embed_norm=False), "model.embed_norm=False"),
    ("bart-mini", dict(activation="geglu"), "model.activation='geglu'"),
    ("bart-mini", dict(norm_position="pre"), "model.norm_position='pre'"),
    ("bart-mini", dict(norm_eps=1e-12), "model.norm_eps=1e-12"),
    ("bart-mini", dict(tied_output_scale=True), "model.tied_output_scale=True"),
    ("transformer-base", {}, "model.sinusoidal_layout='interleaved'"),  # Vaswani's interleaved table: not Marian's
    ("transformer-base", dict(position="none"), "model.position='none'"),
])
def test_encoder_decoders_no_format_holds_refuse_to_export(preset, change, word, tokenizer, tmp_path):
    small = dict(n_layer=1, n_decoder_layer=1, d_model=32, n_head=4, d_ff=64, context_length=16)
    model = build_model(model_config_from_preset(preset, vocab_size=tokenizer.vocab_size, **{**small, **change}))
    with pytest.raises(LmforgeError, match="no Hugging Face encoder-decoder equivalent|no equivalent") as e:
        export_hf(LM(model, tokenizer), tmp_path / "hf")
    assert word in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_sinusoidal_layout_is_checked():
    with pytest.raises(LmforgeError, match="model.sinusoidal_layout='halfs'"):
        ModelConfig(family="seq2seq", position="sinusoidal", sinusoidal_layout="halfs", causal=False)

"""The tokenizer class a Hugging Face directory names decides how transformers 5's AutoTokenizer splits
text: GPT2Tokenizer rebuilds GPT-2's byte-level rules (also where no class is named for a "gpt2"
model), a Llama class over a byte-level tokenizer.json (Llama 3's) keeps tokenizer.json as it is,
and the special tokens are the ones tokenizer_config.json names. lmforge encodes as AutoTokenizer
does, and an export keeps it so."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.api import export_hf  # noqa: E402
from tests.test_hf import randomize  # noqa: E402

TEXT = ["Hello world! The quick brown fox jumps over the lazy dog.", "人民日报 你好，世界！", "I love pizza 🍕 and coffee.",
        "  two spaces, then a\nnew line", "tabs\tand\r\nCRLF  end  "] * 8
TRICKY = ["Hello world", "HELLO World", " leading space", "trailing ", "multiple   spaces", "a\nb\n\nc", "人民日报 你好",
          "pizza 🍕🍕", "x  \n  y"]


def byte_level(specials, normalize=False):
    """A byte-level BPE tokenizer.json; `normalize` lowercases (a normalizer GPT2Tokenizer drops)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if normalize:
        tok.normalizer = normalizers.Lowercase()
    return tok


def save(path, model, tok, tokenizer_config):
    model.save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def gpt2(vocab_size):
    cfg = transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return randomize(transformers.GPT2LMHeadModel(cfg))


def llama(vocab_size, eos):
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, max_position_embeddings=64, bos_token_id=0,
                                   eos_token_id=eos)
    torch.manual_seed(0)
    return randomize(transformers.LlamaForCausalLM(cfg))


def assert_encodes_as_autotokenizer(path):
    lm, ref = lmforge.load(path, device="cpu"), transformers.AutoTokenizer.from_pretrained(path)
    for text in TRICKY:
        ids = ref(text)["input_ids"]
        assert lm.encode_prompt(text) == ids, text
        assert lm.tokenizer.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
    return lm, ref


@pytest.mark.parametrize("config", [None, {}, {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": True},
                                    {"tokenizer_class": "GPT2TokenizerFast"}, {"tokenizer_class": "PreTrainedTokenizerFast"},
                                    {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": True}])
def test_gpt2_directories_encode_as_their_tokenizer_class_does(config, tmp_path):
    tok = byte_level(["<|endoftext|>"], normalize=True)
    src = save(tmp_path / "src", gpt2(tok.get_vocab_size()), tok, config)
    lm, ref = assert_encodes_as_autotokenizer(src)
    lowercased = ref("AB")["input_ids"] == ref("ab")["input_ids"]
    assert lowercased == (config is not None and config.get("tokenizer_class") == "PreTrainedTokenizerFast")
    out = export_hf(lm, tmp_path / "out")  # the export's tokenizer encodes as its source's
    again = transformers.AutoTokenizer.from_pretrained(out)
    for text in TRICKY:
        assert again(text)["input_ids"] == ref(text)["input_ids"], text


@pytest.mark.parametrize("name", ["LlamaTokenizerFast", "LlamaTokenizer"])
def test_a_byte_level_tokenizer_labelled_llama_is_read_as_it_is(name, tmp_path):
    """Llama 3 derivatives ship a byte-level tokenizer.json under the Llama class name; transformers
    then uses tokenizer.json as it is, not the class's "▁" rules (which would drop Chinese text)."""
    from tokenizers import processors

    tok = byte_level(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    config = {"tokenizer_class": name, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    src = save(tmp_path / "src", llama(tok.get_vocab_size(), eos=[1, 2]), tok, config)
    lm, ref = assert_encodes_as_autotokenizer(src)
    assert lm.encode_prompt("人民日报")[0] == 0 and len(lm.encode_prompt("人民日报")) > 1
    # the roles are tokenizer_config.json's (eos "<|eot_id|>"), not config.json's first eos id
    assert (lm.tokenizer.bos_id, lm.tokenizer.eos_id) == (0, 2) and set(lm.end_ids) == {1, 2}
    out = export_hf(lm, tmp_path / "out")
    again = transformers.AutoTokenizer.from_pretrained(out)
    assert (again.bos_token, again.eos_token) == (ref.bos_token, ref.eos_token) == ("<|begin_of_text|>", "<|eot_id|>")
    for text in TRICKY:
        assert again(text)["input_ids"] == ref(text)["input_ids"], text

"""Llama 2 / Mistral / TinyLlama-style tokenizers ("▁" for spaces, byte fallback, a decoder that drops
the first space) in a Hugging Face directory: lmforge encodes, decodes, continues and chats exactly as
transformers' AutoTokenizer (which rebuilds the text rules from tokenizer_config.json) does."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.chat import Chat  # noqa: E402
from tests.test_hf import randomize  # noqa: E402

TEXT = ["Hello world! The quick brown fox jumps over the lazy dog.", "ROMEO: But soft, what light breaks?",
        "人民日报 你好，世界！", "I love pizza 🍕 and coffee ☕.", "  two spaces, then a\nnew line"] * 4
PROMPTS = ["Hello", "Hello world", " leading", "人民日报", "pizza 🍕", "a\nb", "a</s>b", ""]
INST = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
        "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


def sentencepiece_style_dir(path, legacy):
    """A random Llama and the tokenizer.json a SentencePiece conversion writes (as Llama 2's)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = randomize(transformers.LlamaForCausalLM(cfg))
    model.save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "clean_up_tokenization_spaces": False, "chat_template": INST}
    if legacy is not None:
        config["legacy"] = legacy
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize("legacy", [False, True, None])
def test_prompts_encode_as_autotokenizer_encodes_them(legacy, tmp_path):
    sentencepiece_style_dir(tmp_path, legacy)
    lm, ref = lmforge.load(tmp_path, device="cpu"), transformers.AutoTokenizer.from_pretrained(tmp_path)
    for p in PROMPTS:
        assert lm.encode_prompt(p) == ref(p)["input_ids"], p
        ids = ref(p)["input_ids"]
        assert lm.tokenizer.decode(ids) == ref.decode(ids, skip_special_tokens=True), p


def test_a_continuation_keeps_the_space_the_decoder_drops_at_a_texts_start(tmp_path):
    """Decoded alone, a continuation "▁Party" reads "Party"; after "Hello" it reads " Party", as
    transformers decodes prompt and continuation together."""
    model = sentencepiece_style_dir(tmp_path, legacy=False)
    lm, ref = lmforge.load(tmp_path, device="cpu"), transformers.AutoTokenizer.from_pretrained(tmp_path)
    for p in PROMPTS[:6]:
        ids = torch.tensor([ref(p)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=2)[0]
        want = ref.decode(out, skip_special_tokens=True)[len(ref.decode(ids[0], skip_special_tokens=True)):]
        assert lm.generate(p, max_new_tokens=12, temperature=0) == want, p
        assert "".join(lm.stream(p, max_new_tokens=12, temperature=0)) == want, p
        assert lm.generate([p, "Hello world"], max_new_tokens=12, temperature=0)[0] == want, p
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, num_beams=2,
                             early_stopping=True, do_sample=False, pad_token_id=2)[0]
        want = ref.decode(out, skip_special_tokens=True)[len(ref.decode(ids[0], skip_special_tokens=True)):]
        assert lm.generate(p, max_new_tokens=12, num_beams=2, early_stopping=True) == want, p


def test_the_chat_prompt_is_tokenized_as_apply_chat_template_tokenizes_it(tmp_path):
    sentencepiece_style_dir(tmp_path, legacy=False)
    lm, ref = lmforge.load(tmp_path, device="cpu"), transformers.AutoTokenizer.from_pretrained(tmp_path)
    chat = Chat(lm, max_new_tokens=4, sampling=dict(temperature=0))
    chat.turns = [("user", "hi"), ("assistant", "yo")]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "how are you"}]
    want = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    want = want["input_ids"] if hasattr(want, "keys") else want
    assert lm.tokenizer.encode(chat.prompt("how are you")) == list(want)  # no "▁" after <s> or </s>


def test_an_export_tokenizes_as_its_source_does(tmp_path):
    sentencepiece_style_dir(tmp_path / "src", legacy=False)
    lmforge.api.export_hf(str(tmp_path / "src"), tmp_path / "out")
    src = transformers.AutoTokenizer.from_pretrained(tmp_path / "src")
    out = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    for p in PROMPTS:
        assert out(p)["input_ids"] == src(p)["input_ids"], p
        assert out.decode(src(p)["input_ids"], skip_special_tokens=True) == src.decode(src(p)["input_ids"],
                                                                                       skip_special_tokens=True)

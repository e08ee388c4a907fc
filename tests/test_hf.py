"""Hugging Face interop: tiny random `transformers` GPT-2 / Llama models load into lmforge with the same
logits and greedy text, and lmforge models export to directories transformers loads the same way."""

import io
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.api import LM, export_hf  # noqa: E402
from lmforge.cli import main  # noqa: E402
from lmforge.config import GenerateConfig, ModelConfig  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.generate import Engine  # noqa: E402
from lmforge.models import build_model, hf  # noqa: E402
from lmforge.tokenizer import train_bpe  # noqa: E402
from lmforge.checkpoint import save_checkpoint  # noqa: E402

V, EOS = 301, 1
TEXT = "The quick brown fox jumps over the lazy dog. Über Straße, 人民 and naïve café! " * 20


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from their init (norms away from 1, biases away from 0), so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def hf_model(kind: str) -> torch.nn.Module:
    common = dict(vocab_size=V, bos_token_id=0, eos_token_id=EOS)
    if kind.startswith("gpt2"):
        cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                      tie_word_embeddings=kind == "gpt2", **common)
        return randomize(transformers.GPT2LMHeadModel(cfg))
    tied = kind == "llama-tied"
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=1 if tied else 2, max_position_embeddings=64, rope_theta=500.0,
                                   tie_word_embeddings=tied, attention_bias=tied, mlp_bias=tied, **common)
    return randomize(transformers.LlamaForCausalLM(cfg))


def hf_greedy(model, prompt: list[int], eos: int = EOS, n: int = 20) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=eos, pad_token_id=eos)
    return out[0, len(prompt):].tolist()


def our_greedy(model, prompt: list[int], eos: int = EOS, n: int = 20) -> list[int]:
    return Engine(model).generate([prompt], GenerateConfig(max_new_tokens=n, temperature=0, stop_ids=(eos,)))[0]


def max_diff(hf_model_, ours, ids) -> float:
    with torch.no_grad():
        return (hf_model_(ids).logits - ours(ids)).abs().max().item()


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-untied", "llama-gqa", "llama-tied"])
def test_hf_checkpoint_loads_with_same_logits_and_greedy_text(kind, tmp_path):
    ref = hf_model(kind)
    ref.save_pretrained(tmp_path, max_shard_size="40KB" if kind == "gpt2" else "1GB")  # gpt2: sharded
    assert (tmp_path / "model.safetensors.index.json").is_file() == (kind == "gpt2")
    ours = hf.load_hf(tmp_path)
    assert ours.config.tie_embeddings == ref.config.tie_word_embeddings
    ids = torch.randint(2, V, (2, 40), generator=torch.Generator().manual_seed(1))
    assert max_diff(ref, ours, ids) < 1e-4
    prompt = ids[0, :6].tolist()
    assert our_greedy(ours, prompt) == hf_greedy(ref, prompt)


def test_bare_base_model_checkpoint_without_prefix(tmp_path):
    ref = hf_model("gpt2")
    ref.transformer.save_pretrained(tmp_path)  # GPT2Model: keys "h.0...", no "transformer.", no lm_head
    ids = torch.randint(0, V, (1, 30), generator=torch.Generator().manual_seed(3))
    assert max_diff(ref, hf.load_hf(tmp_path), ids) < 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([TEXT], vocab_size=300)


def lmforge_model(kind: str, vocab: int, context: int = 64) -> torch.nn.Module:
    shapes = {
        "gpt2": dict(activation="gelu_tanh"),
        "gpt2-gelu-untied": dict(activation="gelu", tie_embeddings=False),
        "llama": dict(position="rope", norm="rmsnorm", activation="swiglu", n_kv_head=2, bias=False,
                      tie_embeddings=False, rope_theta=500.0, norm_eps=1e-6, d_ff=96),
        "llama-tied-bias": dict(position="rope", norm="rmsnorm", activation="swiglu", n_kv_head=1, d_ff=96),
    }
    cfg = ModelConfig(vocab_size=vocab, context_length=context, n_layer=2, n_head=4, d_model=64, **shapes[kind])
    torch.manual_seed(0)
    return randomize(build_model(cfg))


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-gelu-untied", "llama", "llama-tied-bias"])
def test_export_loads_in_transformers_with_same_logits_tokens_and_text(kind, tokenizer, tmp_path):
    model = lmforge_model(kind, tokenizer.vocab_size)
    out = export_hf(LM(model, tokenizer), tmp_path / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "The lazy café, 人民 jumps!"
    ids = hf_tok(text)["input_ids"]
    assert ids == tokenizer.encode(text) and hf_tok.decode(ids) == tokenizer.decode(ids) == text
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == tokenizer.eos_id == ref.config.eos_token_id
    assert hf_tok.pad_token_id == tokenizer.pad_id and hf_tok.bos_token_id == tokenizer.bos_id
    batch = torch.randint(0, tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(2))
    assert max_diff(ref, model, batch) < 1e-4
    assert our_greedy(model, ids, tokenizer.eos_id) == hf_greedy(ref, ids, tokenizer.eos_id)
    back = hf.load_hf(out)  # round trip: identical tensors, same shape
    assert back.config == model.config
    mine, theirs = model.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    lm = lmforge.load(out, device="cpu")  # the front door takes a Hugging Face directory too
    assert lm.tokenizer.eos_id == tokenizer.eos_id and lm.tokenizer.encode(text) == ids


@pytest.mark.parametrize("change, words", [
    ({"model_type": "mbart"}, ["model_type 'mbart'", "gpt2, llama", "t5"]),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, ["RoPE scaling", "'linear'"]),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, ["RoPE scaling", "'dynamic'"]),
    ({"attention_bias": True, "mlp_bias": False}, ["attention_bias"]),
    ({"hidden_act": "gelu"}, ["hidden_act='gelu'"]),
    ({"head_dim": 32}, ["head_dim=32"]),
])
def test_unsupported_hf_configs_are_clear_errors(change, words, tmp_path):
    hf_model("llama-gqa").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(LmforgeError) as e:
        hf.load_hf(tmp_path)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("change, word", [
    (dict(position="sinusoidal"), "model.position='sinusoidal'"),
    (dict(norm_position="post"), "model.norm_position='post'"),
    (dict(norm="rmsnorm"), "model.norm='rmsnorm'"),
    (dict(bias=False), "model.bias=False"),
    (dict(activation="swiglu"), "model.activation='swiglu'"),
    (dict(position="rope", norm="rmsnorm", activation="gelu"), "model.activation='gelu'"),
    (dict(n_kv_head=2), "model.n_kv_head=2"),
])
def test_models_with_no_hf_shape_refuse_to_export(change, word, tokenizer, tmp_path):
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1, n_head=4,
                                    d_model=32, **change))
    with pytest.raises(LmforgeError, match="no (Hugging Face )?equivalent") as e:
        export_hf(LM(model, tokenizer), tmp_path / "hf")
    assert word in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_hf_dir_without_tokenizer_or_weights(tmp_path):
    hf_model("gpt2").save_pretrained(tmp_path)
    with pytest.raises(LmforgeError, match="no tokenizer.json"):
        lmforge.load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2",')  # cut short
    with pytest.raises(LmforgeError, match="neither an lmforge model config nor a Hugging Face one"):
        lmforge.load(tmp_path)
    hf_model("gpt2").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(LmforgeError, match="no model.safetensors"):
        hf.load_hf(tmp_path)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_and_generate_from_the_export(tokenizer, tmp_path, capsys):
    run = tmp_path / "run"
    save_checkpoint(run, lmforge_model("llama", tokenizer.vocab_size), tokenizer)
    code, out, err = cli(capsys, "export", run, "--to", "hf", tmp_path / "hf", "--json")
    r = json.loads(out)
    assert code == 0 and r["architecture"] == "LlamaForCausalLM" and r["out"] == str(tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json"} <= set(r["files"])
    code, out, err = cli(capsys, "generate", tmp_path / "hf", "The", "--max-new-tokens", "5", "--json")
    assert code == 0 and json.loads(out)["prompt"] == "The", err
    code, out, err = cli(capsys, "eval", tmp_path / "hf")  # no split of its own: the error names --file
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--file" in err and "Traceback" not in err
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 30)
    code, out, err = cli(capsys, "eval", tmp_path / "hf", "--file", text, "--json")
    assert code == 0 and json.loads(out)["perplexity"] > 1, err


def test_cli_export_bad_inputs(tokenizer, tmp_path, capsys):
    def refused(*args, words):
        code, out, err = cli(capsys, "export", *args)
        assert code == 2 and out == "" and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err

    refused(tmp_path / "nope", tmp_path / "hf", words=["does not exist"])
    run = tmp_path / "run"
    save_checkpoint(run, lmforge_model("gpt2", tokenizer.vocab_size), tokenizer)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused(run, busy, words=["not an empty directory"])
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    sinus = tmp_path / "sinus"
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1, n_head=2, d_model=16,
                      position="sinusoidal")
    save_checkpoint(sinus, build_model(cfg), tokenizer)
    refused(sinus, tmp_path / "hf", words=["position='sinusoidal'", "no Hugging Face equivalent"])
    refused(run, busy / "keep.txt" / "hf", words=["cannot write", "keep.txt"])
    classifier = tmp_path / "classifier"
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1, n_head=2, d_model=16,
                      head="classify", labels=["neg", "pos"])
    save_checkpoint(classifier, build_model(cfg), tokenizer)
    refused(classifier, tmp_path / "hf", words=["'classify' head", "export the pretrained run"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "classifier", "run", "sinus"]  # nothing half-written
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")  # a link to an empty directory: written where it points
    code, out, err = cli(capsys, "export", run, tmp_path / "link")
    assert code == 0 and (tmp_path / "empty" / "config.json").is_file() and (tmp_path / "link").is_symlink(), err


def test_a_checkpoint_that_wants_bos_gets_it_on_every_prompt(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    out = export_hf(LM(lmforge_model("llama", tokenizer.vocab_size), tokenizer), tmp_path / "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert not lmforge.load(out, device="cpu").add_bos  # lmforge's own models are not trained with one
    # With a tokenizer.json, transformers 5 ignores add_bos_token: only the post-processor adds bos
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    for text in ("hello", ""):
        assert lmforge.load(out, device="cpu").encode_prompt(text or [tokenizer.eos_id]) == \
            (AutoTokenizer.from_pretrained(out)(text)["input_ids"] or [tokenizer.eos_id])
    # a model that wants bos (add_bos) exports a tokenizer.json that adds it, for transformers too
    lm = LM(lmforge_model("llama", tokenizer.vocab_size), tokenizer, add_bos=True)
    assert lm.encode_prompt("hello") == [tokenizer.bos_id] + tokenizer.encode("hello")
    again = export_hf(lm, tmp_path / "again")
    for text in ("hello", ""):
        assert lmforge.load(again, device="cpu").encode_prompt(text) == lm.encode_prompt(text) \
            == AutoTokenizer.from_pretrained(again)(text)["input_ids"]

    # Llama's own tokenizers add bos in tokenizer.json's post-processor, with no add_bos_token set:
    # prompts are then encoded as transformers' AutoTokenizer encodes them.
    from tokenizers import Tokenizer as HFTokenizer, processors

    tok = HFTokenizer.from_file(str(out / "tokenizer.json"))
    bos = tok.id_to_token(tokenizer.bos_id)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tokenizer.bos_id)])
    tok.save(str(out / "tokenizer.json"))
    for flag in (None, False):
        (out / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": flag}))
        lm = lmforge.load(out, device="cpu")
        for text in ("hello there", "今天", ""):
            assert lm.encode_prompt(text) == AutoTokenizer.from_pretrained(out)(text)["input_ids"], text
        assert lm.encode_prompt("hello")[0] == tokenizer.bos_id


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
INST = ("{{ bos_token }}{% if messages[-1]['role'] != 'user' %}{{ raise_exception('the last turn must be the user') }}"
        "{% endif %}{% for m in messages %}\n  {% if m['role'] == 'system' %}[SYS]{{ m['content'] | trim }}[/SYS]\n"
        "  {% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]\n  {% else %} {{ m['content'] }}{{ eos_token }}\n"
        "  {% endif %}{% endfor %}")


@pytest.mark.parametrize("template, where", [(CHATML, "config"), (INST, "jinja"), (INST, "named")])
def test_chat_uses_the_models_own_template_as_transformers_renders_it(template, where, tokenizer, tmp_path, capsys,
                                                                        monkeypatch):
    from lmforge.chat import Chat, HFChatTemplate

    out = export_hf(LM(lmforge_model("llama", tokenizer.vocab_size, context=256), tokenizer), tmp_path / "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    if where == "jinja":
        (out / "chat_template.jinja").write_text(template)
    else:
        config["chat_template"] = template if where == "config" else [{"name": "default", "template": template}]
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    lm = lmforge.load(out, device="cpu")
    chat = Chat(lm, system="  Be brief. ", max_new_tokens=4, sampling=dict(temperature=0))
    assert isinstance(chat.template, HFChatTemplate)
    chat.turns = [("user", "hi"), ("assistant", "hello")]
    messages = [{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you?"}]
    ref = transformers.AutoTokenizer.from_pretrained(out)
    text = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat.prompt("how are you?") == text
    want = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert lm.encode_prompt(lm.tokenizer.encode(text)) == list(want)  # no second bos where the template has one
    assert (tokenizer.bos_id in want) == (template == INST)
    list(chat.send("how are you?"))
    assert chat.turns[-2] == ("user", "how are you?") and chat.turns[-1][0] == "assistant"
    if template == INST:
        with pytest.raises(LmforgeError, match="chat template refused the conversation: the last turn must be the user"):
            chat.template.render([("user", "a"), ("assistant", "b")])
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert cli(capsys, "chat", out, "--max-new-tokens", "3", "--temperature", "0")[0] == 0


def test_chat_templates_render_without_transformers_loaded_and_stop_at_every_end_id(tokenizer, tmp_path):
    import subprocess
    import sys

    code = ("from lmforge.chat import HFChatTemplate\n"
            "print(HFChatTemplate('{% for m in messages %}{{ m.content }}{% break %}{% endfor %}').render([('user', 'hi')]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # nothing else imports jinja2
    assert done.returncode == 0 and done.stdout.strip() == "hi", done.stderr
    from lmforge.chat import Chat, hf_chat_template

    out = export_hf(LM(lmforge_model("llama", tokenizer.vocab_size, context=256), tokenizer), tmp_path / "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHATML}))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
    template = hf_chat_template(out)
    assert set(template.stop_ids) >= {7, 9}
    chat = Chat(lmforge.load(out, device="cpu"))
    assert {7, 9, tokenizer.eos_id} <= set(chat.template.stop_ids)
    config["chat_template"] = [{"name": "tool_use", "template": CHATML}]
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError, match="none is 'default'"):
        hf_chat_template(out)


def test_a_broken_chat_template_is_one_clear_error(tokenizer, tmp_path):
    from lmforge.chat import Chat

    out = export_hf(LM(lmforge_model("gpt2", tokenizer.vocab_size), tokenizer), tmp_path / "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{% for m in messages %}"}))
    chat = Chat(lmforge.load(out, device="cpu"))
    with pytest.raises(LmforgeError, match="chat template fails .*TemplateSyntaxError"):
        chat.prompt("hi")
    assert Chat(lmforge.load(out, device="cpu"), template=None).template.source.startswith("{% for")


def test_an_export_carries_lmforges_chat_template_both_ways(tokenizer, tmp_path):
    from lmforge.chat import Chat, ChatTemplate

    out = export_hf(LM(lmforge_model("gpt2", tokenizer.vocab_size, context=256), tokenizer), tmp_path / "hf")
    messages = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "hi "},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you?"}]
    text = transformers.AutoTokenizer.from_pretrained(out).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    turns = [(m["role"], m["content"]) for m in messages[1:]]
    assert text == ChatTemplate().render(turns, " Be brief. ") == "Be brief.\n\nUser: hi\nAssistant: hello\nUser: how are you?\nAssistant:"
    chat = Chat(lmforge.load(out, device="cpu"))  # read back as lmforge's own: it stops at "\nUser:"
    assert isinstance(chat.template, ChatTemplate) and chat.template.stops == ["\nUser:"]
    again = export_hf(lmforge.load(out, device="cpu"), tmp_path / "again")  # a model's own template travels on
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["chat_template"] = CHATML
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    third = export_hf(lmforge.load(out, device="cpu"), tmp_path / "third")
    assert json.loads((third / "tokenizer_config.json").read_text())["chat_template"] == CHATML
    named = [{"name": "tool_use", "template": CHATML}, {"name": "rag", "template": INST}]  # no "default": kept as is
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": named}))
    fourth = export_hf(lmforge.load(out, device="cpu"), tmp_path / "fourth")
    assert json.loads((fourth / "tokenizer_config.json").read_text())["chat_template"] == named
    assert json.loads((again / "tokenizer_config.json").read_text())["chat_template"] == ChatTemplate().jinja()


def test_a_tokenizer_larger_than_the_model_is_one_clear_error(tokenizer, tmp_path):
    small = ModelConfig(vocab_size=40, context_length=16, n_layer=1, n_head=2, d_model=16)  # the tokenizer has 300
    save_checkpoint(tmp_path / "run", build_model(small), tokenizer)
    with pytest.raises(LmforgeError, match="beyond the model's vocabulary of 40"):
        lmforge.load(tmp_path / "run", device="cpu").generate("hello world", max_new_tokens=2)
    if not torch.cuda.is_available():  # the fix it names is the Python argument, not a training flag
        with pytest.raises(LmforgeError, match=r"CUDA is not available here; use device='cpu'$"):
            lmforge.load(tmp_path / "run", device="cuda")


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
def test_beam_search_with_penalties_picks_what_transformers_picks(kind, tmp_path):
    """Both apply the repetition penalty and the n-gram ban to the log-probabilities of each step."""
    ref = hf_model(kind)
    ref.save_pretrained(tmp_path)
    ours = hf.load_hf(tmp_path)
    prompt = torch.randint(2, V, (1, 6), generator=torch.Generator().manual_seed(5))
    for kw in (dict(), dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2), dict(length_penalty=0.5)):
        out = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, num_beams=3,
                           do_sample=False, early_stopping=True, eos_token_id=EOS, pad_token_id=EOS, **kw)
        theirs = out[0, 6:].tolist()
        theirs = theirs[:theirs.index(EOS) + 1] if EOS in theirs else theirs  # ours ends at the stop id
        mine = Engine(ours).generate(prompt, GenerateConfig(max_new_tokens=12, num_beams=3, stop_ids=(EOS,), **kw))
        assert mine[0] == theirs, kw


def test_every_end_id_a_directory_lists_stops_generation(tokenizer, tmp_path):
    """Llama 3 lists end-of-text and end-of-turn in eos_token_id; generate stops at either."""
    out = export_hf(LM(lmforge_model("llama", tokenizer.vocab_size), tokenizer), tmp_path / "hf")
    lm = lmforge.load(out, device="cpu")
    prompt = [lm.encode_prompt("hello")]
    free = Engine(lm.model).generate(prompt, lm.generate_config(12, temperature=0, stop_at_eos=False))[0]
    end = free[4] if free[4] != lm.tokenizer.eos_id else free[5]
    for name in ("config.json", "generation_config.json"):
        cfg = json.loads((out / name).read_text())
        (out / name).write_text(json.dumps({**cfg, "eos_token_id": [lm.tokenizer.eos_id, end]}))
    lm = lmforge.load(out, device="cpu")
    gen = lm.generate_config(12, temperature=0)
    assert set(gen.stop_ids) == {lm.tokenizer.eos_id, end}
    assert Engine(lm.model).generate(prompt, gen)[0] == free[:free.index(end) + 1]
    again = export_hf(lm, tmp_path / "again")
    assert json.loads((again / "generation_config.json").read_text())["eos_token_id"] == [lm.tokenizer.eos_id, end]
    assert lmforge.load(again, device="cpu").end_ids == lm.end_ids


@pytest.mark.parametrize("kind", ["gpt2", "llama-gqa"])
def test_a_config_that_names_only_its_architecture_loads(kind, tmp_path):
    ref = hf_model(kind)
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ids = torch.randint(2, V, (1, 12), generator=torch.Generator().manual_seed(2))
    assert max_diff(ref, hf.load_hf(tmp_path), ids) < 1e-4


def test_an_export_of_a_bfloat16_directory_stays_bfloat16(tokenizer, tmp_path):
    from safetensors import safe_open

    ref = hf_model("llama-gqa").to(torch.bfloat16)
    ref.save_pretrained(tmp_path / "src")
    tokenizer.hf.save(str(tmp_path / "src" / "tokenizer.json"))
    out = export_hf(lmforge.load(tmp_path / "src", device="cpu"), tmp_path / "out")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    back = transformers.AutoModelForCausalLM.from_pretrained(out).state_dict()
    for name, weight in ref.state_dict().items():  # the same bf16 weights, bit for bit
        assert back[name].dtype == torch.bfloat16 and torch.equal(back[name], weight), name


def test_beam_search_returns_what_transformers_beam_search_returns(tmp_path):
    """Random small cases (one or several stop ids, early stopping on and off, every length penalty
    sign): the same hypotheses, in the same order. A tiny vocabulary makes stop ids crowd the
    candidates and hypotheses finish on the last step, where the two edge cases live."""
    import random

    cfg = transformers.GPT2Config(vocab_size=12, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    torch.manual_seed(3)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    ref.save_pretrained(tmp_path)
    ours, rng = hf.load_hf(tmp_path), random.Random(0)
    for _ in range(120):
        prompt = [rng.randrange(12) for _ in range(rng.randint(1, 4))]
        stops = rng.sample(range(12), rng.choice([1, 2, 4]))
        K, lp, early, N = rng.choice([2, 3, 4]), rng.choice([0.0, 1.0, 2.0, -0.5]), rng.random() < 0.5, rng.randint(1, 6)
        n = rng.randint(1, K)
        ids = torch.tensor([prompt])
        out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, do_sample=False, num_beams=K,
                           length_penalty=lp, early_stopping=early, num_return_sequences=n, eos_token_id=stops,
                           pad_token_id=stops[0])[:, len(prompt):].tolist()
        want = [row[:next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in out]
        got = Engine(ours).generate([prompt], GenerateConfig(max_new_tokens=N, temperature=0, num_beams=K, num_samples=n,
                                                             length_penalty=lp, early_stopping=early,
                                                             stop_ids=tuple(stops)))
        assert got == want, dict(prompt=prompt, stops=stops, K=K, lp=lp, early=early, N=N, n=n)


def test_a_directory_is_read_once_and_every_reader_takes_what_was_read(tmp_path, monkeypatch):
    from lmforge.models.hf import io as hf_io

    hf_model("llama-gqa").save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [EOS, 7]}))
    read = []
    parse = hf_io.read_json
    monkeypatch.setattr(hf_io, "read_json", lambda path: read.append(path.name) or parse(path))
    d = hf.HFDir.read(tmp_path)
    assert sorted(read) == ["config.json", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json"]
    model = hf.load_hf(d)
    assert model.config.n_kv_head == 2 and hf.end_ids(d) == (EOS, 7) and hf.stored_dtype(d) == torch.float32
    assert hf.tokenizer_rules(d) is None and hf.special_ids_from_hf(d, lambda token: None)["eos"] == EOS
    assert len(read) == 4  # nothing parsed twice

"""`python -m bench.seq2seq [--json] [--quick]`: encoder-decoder training and translation, lmforge
beside `transformers`, in one run.

Both sides train a model of the `t5-mini` shape (4 + 4 layers, 256 wide, relative buckets, tied and
scaled output) from a random initialisation on the same bible en-es pairs (whole books held out),
tokenised by the same BPE tokenizer, in the same batches of the same order, with the same optimiser
(the translate recipe's: Adafactor at a relative step of 1e-2, linear warmup and decay) and loss
(cross-entropy with label smoothing 0.1) for the same steps:

  lmforge       lmforge.models.seq2seq.Seq2Seq, its precision chosen as `lmforge finetune` chooses it
                (runtime.choose_dtype: bfloat16 autocast where this CPU's probe finds it faster)
  transformers  T5ForConditionalGeneration from a T5Config of the same shape, float32 (its default;
                --peer-dtype bfloat16 runs it under bfloat16 autocast)

Training tokens/s counts the real (unpadded) source and target tokens of the batches. Each trained
model then translates the same test sources with beam search (4 beams, length penalty 1, early
stopping, batches of 16): output tokens/s, and both models' test BLEU and chrF (sacrebleu) beside
the copy-the-source baseline. Two models trained apart translate differently (one may stop sooner,
another repeat itself to the length limit), so the decoders' own speeds are compared once more on one
model: lmforge decodes the transformers-trained model, read with lmforge's T5 loader
(`same_weights`: tokens/s, and the share of translations identical to transformers' own).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from bench.classify import machine

SIZES = {"quick": (60, 60), "default": (600, 200)}  # (training steps, test sources)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.seq2seq", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout; the table goes to stderr")
    ap.add_argument("--quick", action="store_true", help="a few steps and sources: a smoke test")
    ap.add_argument("--pair", default="en-es")
    ap.add_argument("--steps", type=int, help=f"training steps (default {SIZES['default'][0]})")
    ap.add_argument("--test-rows", type=int, help=f"test sources translated (default {SIZES['default'][1]})")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64, help="source and target tokens (cut beyond)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-2, help="Adafactor's relative step (default 1e-2)")
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--peer-dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args(argv)
    steps, rows = SIZES["quick" if args.quick else "default"]
    args.steps, args.test_rows = args.steps or steps, args.test_rows or rows
    return args


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ data


def prepare(args) -> dict:
    """Pairs, their split, the shared tokenizer, the encoded training pairs and the batch order."""
    from lmforge.data.labelled import ShuffledBatches
    from lmforge.data.parallel import load_pairs, split_pairs
    from lmforge.tokenizer import train_bpe

    pairs = load_pairs("bible", pair=args.pair)
    train, _, test = split_pairs(pairs, 0.1, 0.1, args.seed)
    tok = train_bpe(train.sources + train.targets, args.vocab_size)
    L, eos = args.max_length, tok.eos_id
    cut = lambda rows: [ids[:L - 1] + [eos] for ids in tok.encode_batch(rows)]  # noqa: E731
    src, tgt = cut(train.sources), cut(train.targets)
    order = ShuffledBatches(len(src), args.batch_size, args.seed, [len(s) + len(t) for s, t in zip(src, tgt)])
    batches = [order.next_indices() for _ in range(args.steps)]
    return {"tokenizer": tok, "src": src, "tgt": tgt, "batches": batches, "test": test, "train_pairs": len(src),
            "test_src": cut(test.sources[:args.test_rows]), "test_refs": test.targets[:args.test_rows],
            "test_sources": test.sources[:args.test_rows]}


def tensors(data: dict, idx: list[int]) -> dict:
    from lmforge.data import IGNORE
    from lmforge.objectives.seq2seq import shift_right

    pad = data["tokenizer"].pad_id
    src = [data["src"][i] for i in idx]
    tgt = [data["tgt"][i] for i in idx]
    s, t = max(map(len, src)), max(map(len, tgt))
    labels = torch.tensor([r + [IGNORE] * (t - len(r)) for r in tgt])
    return {"src": torch.tensor([r + [pad] * (s - len(r)) for r in src]),
            "src_mask": torch.tensor([[True] * len(r) + [False] * (s - len(r)) for r in src]),
            "labels": labels, "tgt_in": shift_right(labels, pad, pad),
            "tokens": sum(map(len, src)) + sum(map(len, tgt))}


# ------------------------------------------------------------------------------------------ the two sides


def lmforge_model(cfg):
    from lmforge.models import build_model

    return build_model(cfg)


def t5_model(cfg, tok):
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5Config(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff,
                  num_layers=cfg.n_layer, num_decoder_layers=cfg.n_decoder_layer, num_heads=cfg.n_head,
                  relative_attention_num_buckets=cfg.relative_buckets,
                  relative_attention_max_distance=cfg.relative_max_distance, dropout_rate=cfg.dropout,
                  layer_norm_epsilon=cfg.norm_eps, feed_forward_proj="relu", tie_word_embeddings=True,
                  pad_token_id=tok.pad_id, eos_token_id=tok.eos_id, decoder_start_token_id=tok.pad_id)
    return T5ForConditionalGeneration(t5)


def logits_of(side: str, model, b: dict) -> torch.Tensor:
    if side == "lmforge":
        return model(b["src"], b["tgt_in"], b["src_mask"])
    return model(input_ids=b["src"], attention_mask=b["src_mask"].long(), decoder_input_ids=b["tgt_in"]).logits


def train(side: str, model, data: dict, args, dtype) -> dict:
    """The same steps on both sides: Adafactor (lmforge's translate recipe's optimiser, built the way
    the trainer builds it), linear warmup (5%) and decay, label-smoothed cross-entropy."""
    from lmforge.config import TrainConfig
    from lmforge.data import IGNORE
    from lmforge.train.trainer import make_optimizer

    torch.manual_seed(args.seed)
    model.train()
    opt = make_optimizer(model, TrainConfig(optimizer="adafactor", lr=args.lr, weight_decay=0.01))
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (args.steps - s) / max(1, args.steps - warm))))
    tokens, losses = 0, []
    start = time.perf_counter()
    for idx in data["batches"]:
        b = tensors(data, idx)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = logits_of(side, model, b)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), b["labels"].flatten(), ignore_index=IGNORE,
                               label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += b["tokens"]
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    return {"train_tokens_per_s": round(tokens / seconds, 1), "train_seconds": round(seconds, 1),
            "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4)}


def generated(row: list[int], eos: int, pad: int) -> list[int]:
    """A row of transformers' `generate` -> the tokens it produced: after the start token, up to and
    including the first EOS (as lmforge's engine returns them). A beam that finished before the
    batch's longest is filled out with EOS (or pad) to the batch's length; those fill tokens were
    never decoded and are not counted."""
    new = row[1:]
    if eos in new:
        new = new[:new.index(eos) + 1]
    return [t for t in new if t != pad]


@torch.no_grad()
def translate(side: str, model, data: dict, args, dtype) -> dict:
    """Beam-search translations of the test sources, batches of 16 sorted by length; output tokens/s."""
    from lmforge.config import GenerateConfig
    from lmforge.data.labelled import by_length
    from lmforge.generate import Engine

    tok, model = data["tokenizer"], model.eval()
    rows = data["test_src"]
    outs: list = [None] * len(rows)
    engine = Engine(model) if side == "lmforge" else None  # as `lmforge translate` decodes
    produced, start = 0, time.perf_counter()
    for idx in by_length([len(r) for r in rows], 16):
        chunk = [rows[i] for i in idx]
        cap = min(args.max_length, 2 * max(map(len, chunk)) + 10)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            if side == "lmforge":
                gen = GenerateConfig(max_new_tokens=cap, num_beams=args.beams, stop_ids=(tok.eos_id,))
                new = engine.generate(chunk, gen)
            else:
                s = max(map(len, chunk))
                ids = torch.tensor([r + [tok.pad_id] * (s - len(r)) for r in chunk])
                mask = torch.tensor([[1] * len(r) + [0] * (s - len(r)) for r in chunk])
                out = model.generate(input_ids=ids, attention_mask=mask, num_beams=args.beams, max_new_tokens=cap,
                                     early_stopping=True, length_penalty=1.0, do_sample=False)
                new = [generated(row, tok.eos_id, tok.pad_id) for row in out.tolist()]
        for i, ids in zip(idx, new):
            outs[i] = ids
            produced += len(ids)
    seconds = time.perf_counter() - start
    texts = [tok.decode(ids).strip() for ids in outs]
    return {"translate_tokens_per_s": round(produced / seconds, 1), "translate_seconds": round(seconds, 1),
            "outputs": texts}


def scores(texts: list[str], data: dict, args) -> dict:
    from lmforge.evaluate.text_report import text_report

    r = text_report(texts, data["test_refs"], lang=args.pair.split("-")[1], resamples=0)
    return {"bleu": round(r["bleu"], 2), "chrf": round(r["chrf"], 2), "bleu_signature": r["bleu_signature"]}


def side_run(side: str, data: dict, cfg, args) -> dict:
    from lmforge.runtime import choose_dtype

    torch.manual_seed(args.seed)
    model = lmforge_model(cfg) if side == "lmforge" else t5_model(cfg, data["tokenizer"])
    if side == "lmforge":
        dtype, why = choose_dtype(torch.device("cpu"), "auto", cfg.d_model)
    else:
        dtype, why = (torch.bfloat16, "--peer-dtype bfloat16") if args.peer_dtype == "bfloat16" else \
            (None, "float32, transformers' default")
    log(f"{side}: {sum(p.numel() for p in model.parameters()):,} parameters; precision: "
        f"{'bfloat16 autocast' if dtype else 'float32'} ({why})")
    r = {"params": sum(p.numel() for p in model.parameters()), "dtype": "bfloat16" if dtype else "float32",
         **train(side, model, data, args, dtype)}
    log(f"{side}: trained {args.steps} steps at {r['train_tokens_per_s']:,.0f} tokens/s, loss {r['final_loss']}")
    t = translate(side, model, data, args, dtype)
    r.update({k: v for k, v in t.items() if k != "outputs"}, **scores(t["outputs"], data, args),
             examples=t["outputs"][:3], outputs=t["outputs"])
    log(f"{side}: translated at {r['translate_tokens_per_s']:,.0f} tokens/s; BLEU {r['bleu']}, chrF {r['chrf']}")
    return r, model


def same_weights(hf_model, theirs: dict, data: dict, args) -> dict:
    """lmforge's engine decoding the transformers-trained model (read with lmforge's T5 loader): in
    float32, transformers' precision, it makes the same translations, so the ratio is the decoders'
    speed alone; in the precision lmforge chooses (bfloat16 autocast where faster), the speed a user
    gets, with the share of translations that still come out identical."""
    import tempfile

    from lmforge.models.hf import load_hf
    from lmforge.runtime import choose_dtype

    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model = load_hf(tmp)
    chosen = choose_dtype(torch.device("cpu"), "auto", model.config.d_model)[0]
    out = {}
    for name, dtype in {"float32": None, "chosen": chosen}.items():
        if name == "chosen" and dtype is None:
            out[name] = out["float32"]
            continue
        t = translate("lmforge", model, data, args, dtype)
        same = sum(a == b for a, b in zip(t["outputs"], theirs["outputs"])) / len(t["outputs"])
        out[name] = {"dtype": "bfloat16" if dtype else "float32", "translate_tokens_per_s": t["translate_tokens_per_s"],
                     "translate_seconds": t["translate_seconds"], "identical_outputs": round(same, 3),
                     "ratio": round(t["translate_tokens_per_s"] / theirs["translate_tokens_per_s"], 2)}
        log(f"lmforge decoding the transformers-trained model in {out[name]['dtype']}: "
            f"{out[name]['translate_tokens_per_s']:,.0f} tokens/s, {out[name]['ratio']}x transformers on it "
            f"({same:.0%} of the translations identical)")
    return out


def main(argv=None) -> int:
    from lmforge.config import model_config_from_preset

    args = parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    started = datetime.datetime.now()
    log(f"preparing bible {args.pair} ...")
    data = prepare(args)
    tok = data["tokenizer"]
    cfg = model_config_from_preset("t5-mini", vocab_size=tok.vocab_size, decoder_start_id=tok.pad_id)
    out = {"date": started.date().isoformat(), "machine": {**machine(), "torch": torch.__version__},
           "setup": {"pair": args.pair, "train_pairs": data["train_pairs"], "steps": args.steps,
                     "batch_size": args.batch_size, "max_length": args.max_length, "vocab_size": tok.vocab_size,
                     "test_rows": len(data["test_src"]), "beams": args.beams}}
    out["lmforge"], _ = side_run("lmforge", data, cfg, args)
    out["transformers"], hf_model = side_run("transformers", data, cfg, args)
    out["same_weights"] = same_weights(hf_model, out["transformers"], data, args)
    out["copy_source"] = scores(data["test_sources"], data, args)
    lm, hf = out["lmforge"], out["transformers"]
    for side in (lm, hf):
        side.pop("outputs")
    out["ratios"] = {"train": round(lm["train_tokens_per_s"] / hf["train_tokens_per_s"], 2),
                     "translate": round(lm["translate_tokens_per_s"] / hf["translate_tokens_per_s"], 2),
                     "translate_same_weights": out["same_weights"]["chosen"]["ratio"],
                     "translate_same_weights_float32": out["same_weights"]["float32"]["ratio"]}
    ratios = out["ratios"]
    log(f"lmforge / transformers: training {ratios['train']}x (target >= 1.3x), beam-{args.beams} translation "
        f"{ratios['translate']}x, decoding the same model {ratios['translate_same_weights']}x (float32 both: "
        f"{ratios['translate_same_weights_float32']}x; target >= 2x); BLEU {lm['bleu']} vs {hf['bleu']}, chrF "
        f"{lm['chrf']} vs {hf['chrf']} (copy the source: BLEU {out['copy_source']['bleu']}, chrF "
        f"{out['copy_source']['chrf']})")
    if args.json:
        print(json.dumps(out))
    return 0 if all(math.isfinite(v) for v in out["ratios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

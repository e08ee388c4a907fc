"""The numbers in docs/ are the numbers the code computes."""

import math
from pathlib import Path

import torch

from lmforge.evaluate.perplexity import bits_per_byte, perplexity
from lmforge.nn import attention_weights, causal_mask

DOCS = Path(__file__).resolve().parents[1] / "docs"
Q = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 1]])
K = torch.tensor([[1.0, 1, 1], [0, 0, 1], [1, 0, 1]])
V = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]])


def rows(m: torch.Tensor) -> list[str]:
    return ["[" + ", ".join(f"{v:.4f}" for v in row) + "]" for row in m.tolist()]


def test_attention_doc_numbers():
    doc = (DOCS / "attention.md").read_text()
    scores = Q @ K.T
    w = attention_weights(Q, K)
    wc = attention_weights(Q, K, causal_mask(3))
    for m in (scores / math.sqrt(3), w, w @ V, wc, wc @ V, scores / scores.sum(-1, keepdim=True)):
        for r in rows(m):
            assert r in doc, r
    a, b = math.exp(2 / math.sqrt(3)), math.exp(1 / math.sqrt(3))  # the hand calculation of row 1
    for value in (a, b, 2 * a + b):
        assert f"{value:.4f}" in doc, value
    for r in scores.int().tolist():
        assert "[" + ", ".join(map(str, r)) + "]" in doc


def test_language_modeling_doc_numbers():
    doc = (DOCS / "language-modeling.md").read_text()
    nll = [-math.log(p) for p in (0.5, 0.25, 0.8)]
    mean = sum(nll) / 3
    for value in (*nll, mean, perplexity(mean), bits_per_byte(sum(nll), 5)):
        assert f"{value:.4f}" in doc, value


def test_shared_history_doc_example():
    from lmforge.generate.cpu.shared_history import SharedHistoryCache

    doc = " ".join((DOCS / "generation.md").read_text().split())
    cache = SharedHistoryCache(None, 1, 3, 1, 4, 2)  # 3 beams, 4 positions; the table needs no compiled call
    cache.advance(2)
    cache.select(torch.tensor([1, 1, 0]))
    first = [row[:2] for row in cache.owner.tolist()]
    column = [row[2] for row in cache.owner.tolist()]
    cache.advance(1)
    cache.select(torch.tensor([2, 0, 0]))
    second = [row[:3] for row in cache.owner.tolist()]
    assert "rows become {}, {} and {}".format(*first) in doc and f"writes column 2 as {column}" in doc
    assert "the rows are {}, {} and {}".format(*second) in doc


def test_generation_doc_numbers():
    from lmforge.generate.beam import Hypotheses
    from lmforge.generate.sampling import penalize_repeats, process_logits

    doc = (DOCS / "generation.md").read_text()
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    dist = lambda x: "[" + ", ".join("0" if v == 0 else f"{v:.4f}" for v in torch.softmax(x, -1)[0].tolist()) + "]"  # noqa: E731
    for rule in (dict(), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=2), dict(top_p=0.8), dict(min_p=0.2)):
        assert dist(process_logits(logits, **rule)) in doc, rule
    p = torch.softmax(logits, -1)[0]
    assert f"{p[0] + p[1]:.4f}" in doc and f"{0.2 * p[0]:.4f}" in doc
    from lmforge.generate.sampling import draw

    assert "F = [" + ", ".join(f"{v:.4f}" for v in p.cumsum(0).tolist()) + "]" in doc
    assert f"u = 0.9 gives token {draw(p.unsqueeze(0), torch.tensor([[0.9]])).item()}" in doc
    penalized = penalize_repeats(logits, torch.tensor([[0, 3]]), 1.5)
    assert rows(penalized)[0] in doc and dist(penalized) in doc
    from lmforge.config import model_config_from_preset
    from lmforge.generate.fast_linear import set_layout
    from lmforge.models import build_model

    cfg = model_config_from_preset("gpt-small", n_layer=6, n_head=6, d_model=384, vocab_size=8192, context_length=256,
                                   position="learned", norm="layernorm", activation="gelu", bias=True, tie_embeddings=True)
    n = sum(p.numel() for p in build_model(cfg).parameters())
    assert f"{n:,}" in doc and f"{4 * n / 1e6:.1f} MB" in doc and f"beat {40e9 / (4 * n):.0f} tokens/s" in doc
    w, x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 1.0])
    by_rows = [float(w[i] @ x) for i in range(2)]
    columns = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    set_layout(columns, True)  # stored column by column, the same matrix
    by_columns = sum(x[j] * columns[:, j] for j in range(2))
    assert columns.stride() == (1, 2) and by_rows == by_columns.tolist() == (w @ x).tolist() == [3.0, 7.0]
    assert "[1 + 2, 3 + 4] = [3, 7]" in doc and "1 x [1, 3] + 1 x [2, 4] = [3, 7]" in doc
    uncached = sum(16 + i for i in range(200))
    assert f"{uncached:,}" in doc and f"{16 + 199} positions" in doc and f"{uncached / 215:.1f} times" in doc
    for alpha, winner in ((0.0, [0] * 3), (1.0, [0] * 6)):
        h = Hypotheses(1, alpha)
        h.add(-3.0, [0] * 3)
        h.add(-4.8, [0] * 6)
        assert h.items[0][1] == winner


def test_encoder_objective_doc_numbers():
    import torch.nn.functional as F

    mlm = (DOCS / "masked-lm.md").read_text()
    logits = torch.tensor([[2.0, 0.5, 0.1, -1.0, 0.0], [0.3, 1.5, 0.2, 0.1, -0.5]])
    targets = torch.tensor([0, 2])
    for r in rows(torch.softmax(logits, -1)):
        assert r in mlm, r
    nll = -torch.log_softmax(logits, -1)[torch.arange(2), targets]
    loss = F.cross_entropy(logits, targets).item()
    for value in (*nll.tolist(), loss, perplexity(loss)):
        assert f"{value:.4f}" in mlm, value
    assert "135 chosen" in mlm and f"{0.8 * 135:.0f} masked" in mlm and f"{0.1 * 135:.1f} random" in mlm

    nsp = (DOCS / "next-sentence.md").read_text()
    pair = torch.tensor([[1.2, -0.3]])
    assert rows(torch.softmax(pair, -1))[0] in nsp
    for label in (0, 1):
        assert f"{F.cross_entropy(pair, torch.tensor([label])).item():.4f}" in nsp

    rtd = (DOCS / "replaced-token-detection.md").read_text()
    d = torch.tensor([-2.0, 1.5, -0.5, 0.8, -3.0, 0.2])
    r = torch.tensor([0.0, 1, 0, 0, 0, 1])
    terms = F.binary_cross_entropy_with_logits(d, r, reduction="none")
    for value in (*torch.sigmoid(d).tolist(), *terms.tolist()):
        assert f"{value:.4f}" in rtd, value
    mean = terms.mean().item()
    assert f"L_RTD = {mean:.4f}" in rtd and f"{1.9 + 50 * mean:.4f}" in rtd


def test_fine_tuning_doc_numbers():
    from lmforge.data.labelled import encode_qa
    from lmforge.evaluate.classification import classification_report
    from lmforge.evaluate.entities import entity_report
    from lmforge.evaluate.qa import exact_match, f1, normalize
    from lmforge.tokenizer import train_char

    doc = (DOCS / "fine-tuning.md").read_text()
    true, pred = "pos pos pos pos neg neg neg neu neu neu".split(), "pos pos pos neg neg neg pos neu pos neg".split()
    assert "    true       " + " ".join(true) in doc and "    predicted  " + " ".join(pred) in doc
    r = classification_report(true, pred)
    assert f"is 6 / 10 = {r['accuracy']:.4f}" in doc
    m = r["confusion_matrix"]
    for i, c in enumerate(r["labels"]):
        tp, fp, fn = m[i][i], sum(row[i] for row in m) - m[i][i], sum(m[i]) - m[i][i]
        s = r["per_class"][c]
        assert f"| {c} | {tp} | {fp} | {fn} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} |" in doc, c
    assert f"count the same: {r['macro']['f1']:.4f}" in doc and f"that is the accuracy, {r['micro']['f1']:.4f}" in doc

    gold = [["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC"]]
    guess = [["B-PER", "I-PER", "O", "B-PER", "O", "O", "B-LOC"]]
    for line, tags in (("true", gold[0]), ("predicted", guess[0])):
        assert line + " " in doc and " ".join(tags).replace(" ", "") in doc.replace(" ", "")
    e = entity_report(gold, guess)["micro"]
    words_right = sum(a == b for a, b in zip(gold[0], guess[0])) / len(gold[0])
    assert f"word accuracy {words_right:.4f}" in doc
    assert f"(precision {e['precision']:.4f})" in doc and f"(recall\n{e['recall']:.4f})" in doc
    assert f"entity F1 is {e['f1']:.4f}" in doc

    g, p = "the Eiffel Tower", "Eiffel Tower, Paris"
    assert f'"{g}"   ->  {normalize(g)}' in doc and f'"{p}" ->  {normalize(p)}' in doc
    assert exact_match(p, g) == 0 and f"F1 = {f1(p, g):.4f}" in doc

    tok = train_char(["abcdefghij klmnopqrstuvwxyz?"])
    context = "abcdefghij" * 3 + " xyz " + "klmnopqrst" * 2
    ex, offsets = encode_qa(tok, ["q?"], [context], ["xyz"], max_len=25, stride=5)
    width = len(offsets[0])
    assert f"holds 25 - 3 - 2 = {width} passage tokens" in doc and f"a {len(context)}-token passage" in doc
    starts = [o[0][0] for o in offsets]
    assert f"start\n{starts[1] - starts[0]} tokens apart" in doc
    assert "starting at tokens " + ", ".join(map(str, starts[:-1])) + f" and {starts[-1]}" in doc


def test_lora_doc_numbers():
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.models.lora import LoraSettings, add_lora

    doc = " ".join((DOCS / "chat-and-serving.md").read_text().split())
    d, qkv, ff, r = 768, 3 * 768, 3072, 8
    assert f"{d} x {qkv:,} = {d * qkv:,}" in doc and f"8 x ({d} + {qkv:,}) = {r * (d + qkv):,}" in doc
    assert f"{r * (d + qkv) / (d * qkv):.2%}" in doc
    cfg = model_config_from_preset("gpt2", position="learned", norm="layernorm", activation="gelu", bias=True)
    with torch.device("meta"):  # the count needs no memory
        model = build_model(cfg)
    report = add_lora(model, LoraSettings(rank=r, alpha=16))
    per_block = report["trainable"] // cfg.n_layer
    assert per_block == r * (d + qkv) + r * (d + d) + r * (d + ff) + r * (ff + d)
    assert f"= {per_block:,} numbers per block, {report['trainable']:,} in all" in doc
    assert f"{report['fraction']:.2%} of the {report['total']:,} parameters" in doc
    assert f"({4 * report['trainable'] / 1e6:.1f} MB in float32, against {4 * (report['total'] - report['trainable']) / 1e6:.0f} MB)" in doc


def test_chat_template_doc_numbers():
    from lmforge.tasks.chat import CHAT_TEMPLATE, assistant_spans

    doc = (DOCS / "chat-and-serving.md").read_text()
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What colour is snow?"},
            {"role": "assistant", "content": "Snow is white."}, {"role": "user", "content": "And coal?"},
            {"role": "assistant", "content": "Coal is black."}]
    text, spans = assistant_spans(CHAT_TEMPLATE, conv)
    assert "```\n" + text + "```" in doc and f"{len(text)} characters" in doc
    (a, b), (c, d) = spans
    flat = " ".join(doc.split())
    assert f"characters {a}-{b}" in flat and f"{c}-{d} for the second reply, {b - a + d - c} of the {len(text)}" in flat


def timeline(max_batch: int) -> tuple[list[str], int]:
    """Three requests (A: 6 tokens, submitted before tick 1; B: 2, before tick 2; C: 4, before tick 3)
    through a Scheduler driven tick by tick: one chart row per request (P: prefilled and first token,
    =: a decode step's token), and the ticks it took."""
    from lmforge.config import GenerateConfig, model_config_from_preset
    from lmforge.generate.scheduler import Scheduler
    from lmforge.models import build_model

    torch.manual_seed(0)
    model = build_model(model_config_from_preset("gpt-small", vocab_size=50, context_length=32, n_layer=1,
                                                 n_head=2, d_model=16, d_ff=32))
    sched = Scheduler(model, max_batch=max_batch, thread=False)
    sched.trace = []
    lengths = {"A": 6, "B": 2, "C": 4}
    for name, n in lengths.items():
        sched.submit([1, 2, 3], GenerateConfig(max_new_tokens=n, temperature=0.0, stop_ids=()))
        sched.tick()
    while sched.tick():
        pass
    ticks = len(sched.trace) - 1  # the last tick found nothing to do
    rows = []
    for i, (name, n) in enumerate(lengths.items()):
        marks = ["P" if i in joined else "=" if i in running else " " for joined, running in sched.trace[:ticks]]
        rows.append(f"{name} ({n} tokens)   " + " ".join(f"{m:>2}" for m in marks).rstrip())
    return rows, ticks


def test_continuous_batching_timeline_doc():
    doc = (DOCS / "chat-and-serving.md").read_text()
    together, ticks = timeline(max_batch=16)
    alone, ticks_alone = timeline(max_batch=1)
    head = "tick           " + " ".join(f"{t:>2}" for t in range(1, ticks_alone + 1))
    for rows in (together, alone):
        assert "\n".join([head] + rows) in doc  # the chart, as the scheduler ran it
    assert f"in {ticks} ticks" in doc and f"takes {ticks_alone}" in doc


def test_compression_doc_numbers():
    from lmforge.nn.quantized import dequantize, pack_int4, quantize_int4, quantize_int8

    doc = " ".join((DOCS / "compression.md").read_text().split())
    w = torch.tensor([[0.5, -1.27, 0.3, 0.004]])
    q, s = quantize_int8(w, 4)
    back = dequantize(q, s, None, 8)
    assert f"s = max |w| / 127 = 1.27 / 127 = {s.item():.2f}" in doc and f"= {q.tolist()[0]}" in doc
    assert f"off by {(back - w).abs().max().item():.3f}" in doc and f"`s / 2 = {s.item() / 2:.3f}`" in doc
    group = torch.tensor([[0.9, -0.3, 0.1, 0.42, -0.6, 0.2, 0.0, 0.78]])
    for symmetric in (False, True):
        u, s, z = quantize_int4(group, 8, symmetric)
        packed = pack_int4(u, 8)
        back = dequantize(packed, s, z, 4)
        assert f"`{u.tolist()[0]}`" in doc or f"`u = {u.tolist()[0]}`" in doc
        assert f"`{packed.tolist()[0]}`" in doc or f"(`{packed.tolist()[0]};" in doc
        assert "[" + ", ".join(f"{v:.4f}".rstrip("0").rstrip(".") if v else "0.0" for v in back[0].tolist()) + "]" in doc
        err = (back - group).abs().max().item()
        assert f"off by {'up to ' if symmetric else ''}{err:.4f}".rstrip("0") in doc
        if not symmetric:
            assert f"`s = {s.item():.1f}`" in doc and f"`z = round({-group.min().item() / s.item():.1f}) = {int(z.item())}`" in doc
        else:
            assert f"`s = max |w| / 7 = {s.item():.4f}`" in doc


def test_compression_doc_bfloat16_numbers():
    doc = " ".join((DOCS / "compression.md").read_text().split())
    bits = torch.tensor([0x4300, 0x4305], dtype=torch.int16).view(torch.bfloat16).tolist()
    assert bits == [128.0, 133.0] and "`0x4305` is 133.0" in doc and "133 - 136 = -3 = 5 - 8" in doc
    for x in (0.1, -0.7, 1.3):
        assert f"{x} becomes {torch.tensor(x).bfloat16().item()!r}" in doc


def test_pruning_and_distillation_doc_numbers():
    from lmforge.compress.prune import n_m_mask, unstructured_mask, weight_scores
    from lmforge.objectives.distill import distill_loss, soft_loss

    doc = " ".join((DOCS / "compression.md").read_text().split())
    w = torch.tensor([[0.9, -0.1, 0.4, -0.3], [0.2, 0.8, -0.5, 0.1], [-0.6, 0.3, 0.05, 0.7], [0.1, -0.4, 0.9, -0.15]])
    energy = torch.tensor([0.04, 1.0, 0.25, 4.0])
    wanda = weight_scores(w, energy)
    for row in wanda.tolist():
        assert "[" + ", ".join(f"{v:.3f}".rstrip("0").rstrip(".") for v in row) + "]" in doc, row
    magnitude = unstructured_mask(weight_scores(w, None), 0.5, per_row=False).int().tolist()
    per_row = unstructured_mask(wanda, 0.5, per_row=True).int().tolist()
    assert f"magnitude keeps {magnitude}" in doc and f"Wanda keeps {per_row}" in doc
    assert n_m_mask(wanda).int().tolist() == per_row  # "2:4 ... is Wanda's choice exactly"
    teacher, student, label = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0.5, 1.0, 0.0]]), torch.tensor([0])
    for t in (1.0, 2.0):
        p, q = (torch.softmax(z / t, -1)[0].tolist() for z in (teacher, student))
        kl = soft_loss(student, teacher, t).item() / t ** 2
        loss = distill_loss(student, teacher, label, t, 0.5).item()
        cells = ["[" + ", ".join(f"{v:.4f}" for v in p) + "]", "[" + ", ".join(f"{v:.4f}" for v in q) + "]",
                 f"{kl:.4f}", f"{t * t * kl:.4f}", f"{loss:.4f}"]
        assert f"| T = {t:g} | " + " | ".join(cells) + " |" in doc, cells
    hard = torch.nn.functional.cross_entropy(student, label).item()
    assert f"= {hard:.4f}` in both" in doc


def test_monitoring_doc_numbers():
    from lmforge.evaluate.drift import psi, shares

    doc = (DOCS / "monitoring.md").read_text()
    labels = ["positive", "negative", "neutral"]
    reference = {"positive": 200, "negative": 200, "neutral": 100}
    for window, total in (({"positive": 300, "negative": 550, "neutral": 150}, "0.0909"),
                          ({"positive": 150, "negative": 750, "neutral": 100}, "0.5345")):
        for e, a in zip(shares(reference, labels), shares(window, labels)):
            assert f"| {e:.2f} | {a:.2f} | {math.log(a / e):.4f} | {(a - e) * math.log(a / e):.4f} |" in doc
        assert f"{psi(reference, window):.4f}" == total and f"= {total}" in doc
    assert f"{psi({'a': 1, 'b': 1}, {'a': 7}, ['a', 'b']):.4f}" == "4.6043" and "= 4.6043" in doc

"""Person names and addresses: what no pattern finds, so a tagger learns it.

A tagger is an ordinary token-classification run (`lmforge finetune BASE --task token`) trained on
sentences whose names and addresses are known: this module writes them. Faker fills templates in
English (en_US) and Chinese (zh_CN) with a person's name, an address, and the pattern kinds
(e-mail, phone) as distractors, and each sentence becomes words with BIO tags:

    "Please send it to Mary Ann Jones at 12 Oak St, Springfield."
     O      O    O  O  B-PERSON I-PERSON I-PERSON O B-ADDRESS I-ADDRESS ... O

Words: a CJK character is one word (as Chinese NER data does it: no segmenter's mistakes to learn),
a run of other letters and digits is one (with inner apostrophes and hyphens), each other symbol
is one. `words_with_offsets` gives the same words for any text, so a tagger's word tags map back to
character spans (data/anonymize.py masks them).

The templates are split in two: `pii-examples` writes sentences from the training half; the held-
out half (held_out=True) measures a tagger on sentence frames it has never seen (bench/data.py).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.io import atomic_path
from lmforge.tokenizer import HAN

_WORD = re.compile(rf"[{HAN}]|(?:(?![{HAN}])\w)+(?:['’-](?:(?![{HAN}])\w)+)*|[^\w\s]")
TAGGED = ("person", "address")  # the kinds a tagger finds (its entity types, upper-cased)

# {person} {address} {email} {phone}; the first TRAIN_SHARE of each list train, the rest are held out
EN = [
    "My name is {person} and I live at {address}.",
    "Please send the parcel to {person}, {address}.",
    "{person} called yesterday from {phone} about the invoice.",
    "Contact {person} at {email} if the meeting moves.",
    "The lease was signed by {person}, who moved to {address} in May.",
    "Dear {person}, your order will be delivered to {address}.",
    "According to the report, {person} was seen near {address}.",
    "Ask {person} for the keys; the office is at {address}.",
    "{person} and {person2} both work at {address}.",
    "Our new tenant, {person}, gave {address} as the billing address.",
    "I met {person} last week; she mentioned her flat at {address}.",
    "Witness statement of {person}, resident of {address}, phone {phone}.",
    "Forward every reply to {email}, attention of {person}.",
    "The doctor, {person}, works at the clinic on {address}.",
    "Shipping address: {address}. Recipient: {person}.",
    "Yesterday {person} wrote to me from {address} asking for help.",
    "The account belongs to {person} ({email}).",
    "{person} is moving from {address} to {address2} next month.",
    "Thanks to {person} for hosting us at {address}!",
    "Could {person} confirm the delivery to {address}?",
    "Registered owner: {person}; address on file: {address}.",
    "Hi, this is {person}. Call me back on {phone}.",
    "The parcel for {person} was left outside {address}.",
    "Minutes taken by {person}; next meeting at {address}.",
]
ZH = [
    "我叫{person}，住在{address}。",
    "请把包裹寄给{person}，地址是{address}。",
    "{person}昨天用{phone}打来电话询问发票。",
    "如果会议改期，请通过{email}联系{person}。",
    "租约由{person}签署，他五月搬到了{address}。",
    "尊敬的{person}，您的订单将送到{address}。",
    "据报道，有人在{address}附近看到了{person}。",
    "钥匙在{person}那里，办公室在{address}。",
    "{person}和{person2}都在{address}上班。",
    "新租户{person}留下的账单地址是{address}。",
    "上周我见到了{person}，她提到自己住在{address}。",
    "证人{person}，住址{address}，电话{phone}。",
    "所有回复请转发到{email}，由{person}处理。",
    "{person}医生在{address}的诊所工作。",
    "收货地址：{address}。收件人：{person}。",
    "昨天{person}从{address}给我写信求助。",
    "该账户属于{person}（{email}）。",
    "{person}下个月要从{address}搬到{address2}。",
    "感谢{person}在{address}招待我们！",
    "请{person}确认送货地址{address}。",
    "登记车主：{person}；登记地址：{address}。",
    "你好，我是{person}，请回电{phone}。",
    "寄给{person}的包裹放在了{address}门口。",
    "会议记录人：{person}；下次会议地点：{address}。",
]
TRAIN_SHARE = 0.75


def words_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """The text's words (see the module's docstring) with their character start and end."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def bio_tags(text: str, spans: list[tuple[str, int, int]]) -> tuple[list[str], list[str]]:
    """Words and their BIO tags, given entity spans (type, start, end) in characters: a word inside a
    span gets B- (the span's first word) or I- and the type upper-cased; every other word O."""
    words, tags = [], []
    for word, a, b in words_with_offsets(text):
        inside = next(((t, s) for t, s, e in spans if s <= a and b <= e), None)
        words.append(word)
        if inside is None:
            tags.append("O")
        else:
            first = a == inside[1] or not tags or tags[-1] == "O"
            tags.append(("B-" if first else "I-") + inside[0].upper())
    return words, tags


def _fakers(seed: int):
    try:
        from faker import Faker
    except ImportError:
        raise LmforgeError("generating names and addresses needs Faker: pip install 'lmforge[data]'") from None
    fakers = {"en": Faker("en_US"), "zh": Faker("zh_CN")}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed * 7 + i)
    return fakers


def fill(template: str, fake) -> tuple[str, list[tuple[str, int, int]]]:
    """A template with its slots filled by `fake` (a Faker): the text and its person / address spans."""
    values = {"person": fake.name, "person2": fake.name, "address": fake.address, "address2": fake.address,
              "email": fake.email, "phone": fake.phone_number}
    out, spans, last = [], [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(template[last:m.start()])
        value = " ".join(values[m.group(1)]().split("\n")) if m.group(1).startswith("address") else values[m.group(1)]()
        if fake.locales == ["zh_CN"] and m.group(1).startswith("address"):
            value = value.replace(" ", "")
        start = sum(len(x) for x in out)
        out.append(value)
        kind = m.group(1).rstrip("2")
        if kind in TAGGED:
            spans.append((kind, start, start + len(value)))
        last = m.end()
    out.append(template[last:])
    return "".join(out), spans


def pii_sentences(n: int, languages=("en", "zh"), seed: int = 0,
                  held_out: bool = False) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
    """n sentences (language, text, spans), the languages taking turns, from the training templates
    or the held-out ones."""
    fakers = _fakers(seed)
    rng = random.Random(seed)
    templates = {}
    for lang, ts in (("en", EN), ("zh", ZH)):
        cut = int(len(ts) * TRAIN_SHARE)
        templates[lang] = ts[cut:] if held_out else ts[:cut]
    out = []
    for i in range(n):
        lang = languages[i % len(languages)]
        out.append((lang, *fill(rng.choice(templates[lang]), fakers[lang])))
    return out


def write_examples(out: str | Path, n: int = 4000, languages=("en", "zh"), seed: int = 0) -> dict:
    """`lmforge data pii-examples`: n tagged sentences as token-task JSON lines ({"tokens", "tags"})."""
    unknown = [x for x in languages if x not in ("en", "zh")]
    if unknown or not languages:
        raise LmforgeError(f"--languages {','.join(unknown) or repr(languages)} is not known; use en, zh or en,zh")
    if n < 1:
        raise LmforgeError(f"--n {n} cannot be used; give 1 or more sentences")
    lines, counts = [], {t: 0 for t in TAGGED}
    for _, text, spans in pii_sentences(n, tuple(languages), seed):
        words, tags = bio_tags(text, spans)
        lines.append(json.dumps({"tokens": words, "tags": tags}, ensure_ascii=False))
        for kind, _, _ in spans:
            counts[kind] += 1
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"out": str(out), "sentences": n, "languages": list(languages), "entities": counts}

"""`lmforge data list|prepare|anonymize|augment|dedupe` and `lmforge tokenizer train`: corpora in;
token shards, anonymized, augmented or deduplicated copies and tokenizers out."""

from __future__ import annotations

from pathlib import Path

from lmforge.cli.output import emit, logger
from lmforge.errors import LmforgeError
from lmforge.config import TRAINABLE


def cmd_data_list(args) -> None:
    from lmforge.data.corpora import list_corpora

    rows = list_corpora()
    text = [f"{'name':16} {'lang':5} {'size':36} {'cached':7} licence"]
    text += [f"{r['name']:16} {r['language']:5} {r['size']:36} {'yes' if r['cached'] else 'no':7} {r['licence']}"
             for r in rows]
    emit(args, {"corpora": rows}, "\n".join(text))


def cmd_data_prepare(args) -> None:
    from lmforge.config import DataConfig
    from lmforge.data.shards import prepare

    cfg = DataConfig(corpus=args.corpus, column=args.column, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                     val_fraction=args.val_fraction)
    m = dict(prepare(cfg, log=logger(args)).meta)
    emit(args, m, "\n".join(f"{k}: {v}" for k, v in m.items()))


DONE = {"mask": "masked", "replace": "replaced", "hash": "hashed"}


def cmd_data_anonymize(args) -> None:
    from lmforge.data.anonymize import anonymize_file, check_types, needs_tagger
    from lmforge.train.predict import entity_tagger

    needs_tagger(check_types(args.types), args.tagger)  # before loading anything
    tagger = entity_tagger(args.tagger) if args.tagger else None
    r = anonymize_file(args.input, args.out, args.types, args.mode, args.column, args.seed, tagger)
    found = ", ".join(f"{n} {t}" for t, n in r["found"].items() if n) or "nothing private"
    emit(args, r, f"{r['documents']:,} document(s): found {found}; {DONE[args.mode]} copy in {r['out']}")


def cmd_data_pii_examples(args) -> None:
    from lmforge.data.pii import write_examples

    r = write_examples(args.out, args.n, tuple(x.strip() for x in args.languages.split(",") if x.strip()), args.seed)
    emit(args, r, f"{r['sentences']:,} sentences ({r['entities']['person']:,} names, {r['entities']['address']:,} "
                  f"addresses) in {r['out']}; fine-tune a tagger: lmforge finetune BASE --task token --data {r['out']}")


def cmd_data_augment(args) -> None:
    from lmforge.data.augment import augment_file
    from lmforge.train.predict import round_trip

    translate = round_trip(args.via, logger(args)) if args.via else None
    r = augment_file(args.input, args.out, args.ops, args.n, args.alpha, args.column,
                     args.label_column if args.task == "classify" else None, args.seed, translate)
    emit(args, r, f"{r['rows']:,} row(s) + {r['added']:,} new ({', '.join(r['ops'])}) in {r['out']}; use it for "
                  "training only: split off validation and test rows before augmenting")


def cmd_data_dedupe(args) -> None:
    from lmforge.data.clean import paragraphs
    from lmforge.data.corpora import load_corpus
    from lmforge.data.dedupe import leakage, remove_near_duplicates
    from lmforge.io import atomic_write

    docs = paragraphs(load_corpus(args.corpus, column=args.column).documents)
    kept, found = remove_near_duplicates(docs, args.threshold, args.k, args.shingles == "words")
    r = {"documents": len(docs), "kept": len(kept), "removed": len(docs) - len(kept), "threshold": args.threshold,
         "clusters": [vars(c) for c in found]}
    if args.test:
        r["leakage"] = leakage(kept, paragraphs(load_corpus(args.test, column=args.column).documents), args.threshold, args.k,
                               args.shingles == "words")
    if args.out:
        atomic_write(args.out, "".join(d.rstrip("\n") + "\n\n" for d in kept))
        r["out"] = str(args.out)
    text = f"{len(docs):,} documents: {r['removed']:,} near-copies removed in {len(found):,} clusters (Jaccard >= " \
           f"{args.threshold})" + (f"; {len(r['leakage'])} test documents have a near-copy in training" if args.test else "")
    emit(args, r, text)


def cmd_tokenizer_train(args) -> None:
    from lmforge.data.clean import clean_documents
    from lmforge.data.corpora import load_corpus
    from lmforge.tokenizer import train_tokenizer

    docs, _ = clean_documents(load_corpus(args.corpus, column=args.column).documents)
    tok = train_tokenizer(args.kind, docs, args.vocab_size)
    out = Path(args.out)
    try:
        if out.is_dir() or not out.suffix:
            out.mkdir(parents=True, exist_ok=True)
            out = out / "tokenizer.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tok.save(out)
    except OSError as e:
        raise LmforgeError(f"cannot write {out}: {e.strerror or e}; choose a --out you can write to") from None
    sample = docs[0][:200]
    ids = tok.encode(sample)
    r = {"path": str(out), "kind": tok.kind, "vocab_size": tok.vocab_size,
         "chars_per_token": round(len(sample) / max(1, len(ids)), 3)}
    emit(args, r, f"saved a {tok.kind} tokenizer of {tok.vocab_size:,} tokens to {out} "
                  f"({r['chars_per_token']} characters per token on a sample)")


def add_commands(sub, command, json_flag) -> None:
    d = sub.add_parser("data", help="list, prepare, anonymize, augment and dedupe corpora")
    d = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = command("list", cmd_data_list, "show the built-in corpora: name, language, size, licence, whether cached", d)
    json_flag(dl)
    dp = command("prepare", cmd_data_prepare, "clean, split and tokenise a corpus into cached token shards", d)
    dp.add_argument("corpus", help="built-in corpus name, or a .txt/.jsonl/.csv/.tsv file, folder or glob")
    dp.add_argument("--tokenizer", default="bpe", help="bpe, wordpiece, unigram, char, or a path to a tokenizer.json "
                    "(default: bpe)")
    dp.add_argument("--vocab-size", type=int, default=4096, help="vocabulary of a BPE tokenizer (default: 4096)")
    dp.add_argument("--column", help="text column of a .jsonl/.csv/.tsv corpus (default: text)")
    dp.add_argument("--val-fraction", type=float, default=0.1, help="last fraction of the text kept for validation")
    json_flag(dp)
    _add_rewriting(d, command, json_flag)
    dd = command("dedupe", cmd_data_dedupe, "find near-duplicate documents (MinHash + LSH over shingles) and "
                 "keep the first of each cluster; with --test, which test documents leak from training", d)
    dd.add_argument("corpus", help="built-in corpus name, or a .txt/.jsonl/.csv/.tsv file, folder or glob")
    dd.add_argument("--out", help="write the kept documents here (blank-line separated text)")
    dd.add_argument("--threshold", type=float, default=0.8, help="shingle Jaccard similarity that makes a near-copy")
    dd.add_argument("--shingles", choices=("chars", "words"), default="chars",
                    help="shingle by characters (any script; default) or by words")
    dd.add_argument("--k", type=int, default=5, help="shingle length (default 5)")
    dd.add_argument("--test", help="a test corpus: report its documents that have a near-copy in the training corpus")
    dd.add_argument("--column", help="text column of a .jsonl/.csv/.tsv corpus")
    json_flag(dd)
    t = sub.add_parser("tokenizer", help="train tokenizers").add_subparsers(dest="tok_command", metavar="ACTION",
                                                                            required=True)
    tt = command("train", cmd_tokenizer_train, "train a BPE, WordPiece, Unigram or character tokenizer and save tokenizer.json", t)
    tt.add_argument("corpus", help="built-in corpus name, or a file, folder or glob")
    tt.add_argument("--kind", choices=TRAINABLE, default="bpe", help="byte-level BPE (GPT), WordPiece (BERT, "
                    "ELECTRA), Unigram (SentencePiece's, as T5 uses) or characters (default: bpe)")
    tt.add_argument("--vocab-size", type=int, default=4096)
    tt.add_argument("--column", help="text column of a .jsonl/.csv/.tsv corpus")
    tt.add_argument("--out", default="tokenizer.json", help="file or directory to write (default: tokenizer.json)")
    json_flag(tt)


def _add_rewriting(d, command, json_flag) -> None:
    """The actions that write a changed copy of rows: anonymize (and pii-examples, its tagger's data), augment."""
    da = command("anonymize", cmd_data_anonymize, "mask, replace or hash e-mail addresses, phone numbers, resident "
                 "IDs, card numbers, IP addresses and URLs in a text file; names and addresses with a tagger", d)
    da.add_argument("input", help="a .txt file (one document), or .jsonl / .csv / .tsv (each row one document)")
    da.add_argument("--out", required=True, help="the anonymized copy, in the same format")
    da.add_argument("--types", default="email,phone,id,card,ip,url",
                    help="kinds to find, comma-separated: email,phone,id,card,ip,url (the default: all six "
                    "patterns), person,address (with --tagger)")
    da.add_argument("--tagger", help="person and address: a token-classification run that tags PERSON and ADDRESS "
                    "(fine-tune one on `lmforge data pii-examples`)")
    da.add_argument("--mode", choices=("mask", "replace", "hash"), default="mask",
                    help="mask: [EMAIL]; replace: a consistent fake value (Faker: the data extra); hash: [EMAIL:3f2a9c1b]")
    da.add_argument("--column", default="text", help="text column of a .jsonl/.csv/.tsv file (default: text)")
    da.add_argument("--seed", type=int, default=0, help="seed of the fake values (--mode replace)")
    json_flag(da)
    dx = command("pii-examples", cmd_data_pii_examples, "write sentences with known person names and addresses "
                 "(Faker, English and Chinese) as token-task rows, to fine-tune the tagger anonymize --tagger uses", d)
    dx.add_argument("--out", required=True, help="the .jsonl file of {tokens, tags} rows")
    dx.add_argument("--n", type=int, default=4000, help="sentences (default: 4000)")
    dx.add_argument("--languages", default="en,zh", help="en, zh or en,zh (default: both, taking turns)")
    dx.add_argument("--seed", type=int, default=0)
    json_flag(dx)
    du = command("augment", cmd_data_augment, "more rows for a small labelled set: EDA's synonym replacement, "
                 "random insertion, swap and deletion (WordNet; Cilin for Chinese) and back-translation; labels kept", d)
    du.add_argument("input", help="a .jsonl / .csv / .tsv file of rows, or a .txt file (one text a line)")
    du.add_argument("--out", required=True, help="the rows and their variants, in the same format")
    du.add_argument("--ops", default="synonym,insert,swap,delete",
                    help="operations, comma-separated: synonym, insert, swap, delete, backtranslate (default: the "
                    "first four)")
    du.add_argument("--n", type=int, default=4, help="variants per row (default: 4)")
    du.add_argument("--alpha", type=float, default=0.1, help="share of a row's words each operation changes "
                    "(default: 0.1)")
    du.add_argument("--column", default="text", help="text column of a .jsonl/.csv/.tsv file (default: text)")
    du.add_argument("--task", choices=("classify",), help="classify: every row must have a label (--label-column), "
                    "which its variants keep")
    du.add_argument("--label-column", default="label", help="the label column with --task classify (default: label)")
    du.add_argument("--via", help="backtranslate: THERE,BACK, two lmforge translation runs (one run: its translation)")
    du.add_argument("--seed", type=int, default=0, help="seed of the random choices")
    json_flag(du)

"""`lmforge embed train|similar|analogy|plot`: word vectors from a corpus (skip-gram with negative
sampling) or from a run's input embeddings, and what to ask of them."""

from __future__ import annotations

from lmforge.cli.output import emit, logger
from lmforge.errors import LmforgeError


def cmd_embed_train(args) -> None:
    from lmforge.data.corpora import load_corpus
    from lmforge.embed import Word2VecConfig, WordVectors, corpus_words, from_model, train_word2vec

    docs = corpus_words(load_corpus(args.corpus, column=args.column).documents)
    if args.method == "model":
        if not args.run:
            raise LmforgeError("--method model reads a run's input embeddings; give the run with --run")
        words, vectors = from_model(args.run, docs, top=args.top, min_count=args.min_count)
        if not words:
            raise LmforgeError(f"no word occurs --min-count {args.min_count} times in the corpus; give more text or "
                               "a lower --min-count")
        report = {"method": "model", "run": str(args.run), "words": len(words), "dim": int(vectors.shape[1])}
    else:
        cfg = Word2VecConfig(dim=args.dim, window=args.window, negatives=args.negatives, min_count=args.min_count,
                             epochs=args.epochs, seed=args.seed, backend=args.backend, device=args.device)
        for name, value in (("dim", cfg.dim), ("window", cfg.window), ("negatives", cfg.negatives),
                            ("min-count", cfg.min_count), ("epochs", cfg.epochs)):
            if value < 1:
                raise LmforgeError(f"--{name} {value} cannot be used; give 1 or more")
        words, vectors, report = train_word2vec(docs, cfg, log=logger(args))
    vectors_out = WordVectors(words, vectors)
    report["corpus"] = str(args.corpus)
    vectors_out.save(args.out, report)
    report["out"] = str(args.out)
    emit(args, report, f"{report['words']:,} word vectors of {report['dim']} numbers ({report['method']}) in "
                       f"{args.out}/vectors.txt")


def cmd_embed_similar(args) -> None:
    from lmforge.embed import WordVectors

    wv = WordVectors.load(args.vectors)
    found = {w: wv.similar(w, args.k) for w in args.words}
    emit(args, {"similar": {w: [{"word": x, "cosine": c} for x, c in near] for w, near in found.items()}},
         "\n".join(f"{w}: " + ", ".join(f"{x} {c:.3f}" for x, c in near) for w, near in found.items()))


def cmd_embed_analogy(args) -> None:
    from lmforge.embed import WordVectors

    wv = WordVectors.load(args.vectors)
    best = wv.analogy(args.a, args.b, args.c, args.k)
    emit(args, {"analogy": [args.a, args.b, args.c], "answers": [{"word": x, "cosine": c} for x, c in best]},
         f"{args.a} : {args.b} :: {args.c} : " + ", ".join(f"{x} {c:.3f}" for x, c in best))


def cmd_embed_plot(args) -> None:
    from lmforge.embed import WordVectors
    from lmforge.embed.plot import plot_words

    words = [w.strip() for w in args.words.split(",") if w.strip()]
    out = plot_words(WordVectors.load(args.vectors), words, args.out, args.projection)
    emit(args, {"out": str(out), "words": words, "projection": args.projection},
         f"{len(words)} words ({args.projection.upper()}) drawn in {out}")


def add_commands(sub, command, json_flag) -> None:
    e = sub.add_parser("embed", help="word vectors: train (word2vec, or a model's embeddings), similar, analogy, plot")
    e = e.add_subparsers(dest="embed_command", metavar="ACTION", required=True)
    t = command("train", cmd_embed_train, "word vectors of a corpus's words: skip-gram with negative sampling "
                "(word2vec), or the input embeddings of an lmforge or Hugging Face run (model)", e)
    t.add_argument("corpus", help="built-in corpus name, or a .txt/.jsonl/.csv/.tsv file, folder or glob")
    t.add_argument("--method", choices=("word2vec", "model"), default="word2vec")
    t.add_argument("--run", help="--method model: the run whose input embeddings give the vectors")
    t.add_argument("--out", required=True, help="folder for vectors.txt (word2vec's text format) and report.json")
    t.add_argument("--dim", type=int, default=100, help="numbers per vector (default: 100)")
    t.add_argument("--window", type=int, default=5, help="words either side of the centre (default: 5)")
    t.add_argument("--negatives", type=int, default=5, help="noise words per pair (default: 5)")
    t.add_argument("--min-count", type=int, default=5, help="rarer words are left out (default: 5)")
    t.add_argument("--epochs", type=int, default=5, help="passes over the corpus (default: 5)")
    t.add_argument("--top", type=int, default=20000, help="--method model: the most frequent words kept "
                   "(default: 20000)")
    t.add_argument("--backend", choices=("auto", "gensim", "torch"), default="auto",
                   help="auto: gensim where installed (the embed extra; faster on a CPU), else lmforge's PyTorch code")
    t.add_argument("--device", default="cpu", help="torch backend: cpu or cuda")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--column", help="text column of a .jsonl/.csv/.tsv corpus")
    json_flag(t)
    s = command("similar", cmd_embed_similar, "the nearest words by cosine similarity", e)
    s.add_argument("vectors", help="a folder from `lmforge embed train`, or a word2vec text file")
    s.add_argument("words", nargs="+", help="the words to look up")
    s.add_argument("--k", type=int, default=10, help="neighbours per word (default: 10)")
    json_flag(s)
    a = command("analogy", cmd_embed_analogy, "a : b :: c : ? (the word nearest b - a + c)", e)
    a.add_argument("vectors", help="a folder from `lmforge embed train`, or a word2vec text file")
    a.add_argument("a")
    a.add_argument("b")
    a.add_argument("c")
    a.add_argument("--k", type=int, default=5, help="answers to list (default: 5)")
    json_flag(a)
    p = command("plot", cmd_embed_plot, "a PNG of chosen words placed by a 2-D projection of their vectors", e)
    p.add_argument("vectors", help="a folder from `lmforge embed train`, or a word2vec text file")
    p.add_argument("--words", required=True, help="the words, comma-separated (3 or more)")
    p.add_argument("--out", default="words.png", help="the PNG to write (default: words.png)")
    p.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                   help="pca (exact; default) or tsne (scikit-learn: the embed extra)")
    json_flag(p)

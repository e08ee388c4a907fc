import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TINY_SHAKESPEARE = SHARED / "tinyshakespeare.txt"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Tests never touch the user's cache: corpora, tokenizers and shards go to a temporary one."""
    old = os.environ.get("LMFORGE_CACHE")
    os.environ["LMFORGE_CACHE"] = str(tmp_path_factory.mktemp("lmforge-cache"))
    yield
    if old is None:
        os.environ.pop("LMFORGE_CACHE", None)
    else:
        os.environ["LMFORGE_CACHE"] = old


@pytest.fixture
def shakespeare_text() -> str:
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip(f"{TINY_SHAKESPEARE} is absent (shared test data sits beside the repository)")
    return TINY_SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture
def small_corpus(tmp_path, shakespeare_text) -> Path:
    """~200 KB of real English text as a local file."""
    f = tmp_path / "small.txt"
    f.write_text(shakespeare_text[:200_000], encoding="utf-8")
    return f


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny character-level GPT trained for a few steps through the CLI."""
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip("shared test data is absent")
    tmp = tmp_path_factory.mktemp("cli")
    corpus = tmp / "corpus.txt"
    corpus.write_text(TINY_SHAKESPEARE.read_text()[:100_000])
    out = tmp / "run"
    from lmforge.cli import main

    code = main(["train", "--recipe", "shakespeare-char", "--out", str(out), "--json",
                 "--set", f"data.corpus={corpus}", "--set", "train.max_steps=30", "--set", "train.eval_every=10",
                 "--set", "train.eval_batches=2", "--set", "model.context_length=32"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A tiny character-level GPT pretrained for 60 steps on patterned text, through the CLI."""
    import random

    rng = random.Random(0)
    words = "the cat dog sat ran on in a mat log hat big small red".split()
    tmp = tmp_path_factory.mktemp("pre")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(1500)), encoding="utf-8")
    sets = [f"data.corpus={corpus}", "train.max_steps=60", "train.eval_every=60", "train.eval_batches=4",
            "model.context_length=32", "model.n_layer=2", "model.d_model=64", "model.n_head=4", "train.progress=false"]
    from lmforge.cli import main

    assert main(["train", "--recipe", "shakespeare-char", "--out", str(tmp / "run"), "--json",
                 *[x for s in sets for x in ("--set", s)]]) == 0
    return tmp / "run"


@pytest.fixture(scope="session")
def fine_tuned_classifier(tmp_path_factory):
    """(run, rows.csv): a tiny BERT fine-tuned to tell warm words from cold ones (test_finetune's rows)."""
    from lmforge.train.finetune import finetune
    from tests.test_finetune import quick

    tmp = tmp_path_factory.mktemp("classifier")
    data = classifier_base(tmp)
    finetune(tmp / "base", str(data), tmp / "run", quick(), log=lambda *a: None)
    return tmp / "run", data


def classifier_base(folder: Path) -> Path:
    """An untrained tiny BERT at folder/base and test_finetune's warm/cold rows at folder/rows.csv (returned)."""
    import torch

    from lmforge.checkpoint import save_checkpoint
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.tokenizer import train_char
    from tests.test_finetune import rows, write_csv

    tok = train_char([t for t, _ in rows()])
    torch.manual_seed(0)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=48, n_layer=2, d_model=32,
                                   n_head=2, dropout=0.0)
    save_checkpoint(folder / "base", build_model(cfg), tok)
    return write_csv(folder / "rows.csv", rows())

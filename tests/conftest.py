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

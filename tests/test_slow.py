"""Full-size runs: the shakespeare-char recipe against nanoGPT's figure, and the real quick start.
Marked slow (minutes each); `.ci/run` runs them after the default suite."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY_SHAKESPEARE


def lmforge_json(*args, timeout=1200):
    p = subprocess.run([sys.executable, "-m", "lmforge.cli", *args, "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout, env=os.environ.copy())
    return p, (json.loads(p.stdout) if p.returncode == 0 else None)


@pytest.mark.slow
def test_shakespeare_char_recipe_matches_nanogpt(tmp_path):
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip("shared test data is absent")
    p, r = lmforge_json("train", "--recipe", "recipes/shakespeare-char.yaml", "--out", str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr
    print(f"\nshakespeare-char: val loss {r['val_loss']:.4f}, {r['tokens_per_s']:,.0f} tokens/s, {r['seconds']:.0f} s")
    assert r["val_loss"] <= 1.90  # nanoGPT reports ~1.88 for this configuration
    assert r["tokens_per_s"] > 0


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("corpus", ["shakespeare", "peoples-daily"])
def test_quickstart(tmp_path, corpus):
    p, r = lmforge_json("quickstart", "--corpus", corpus, "--out", str(tmp_path / "qs"))
    if p.returncode != 0 and "could not download" in p.stderr:
        pytest.skip(p.stderr.strip())
    assert p.returncode == 0, p.stderr
    print(f"\nquickstart {corpus}: untrained {r['untrained']['perplexity']:.1f}, bigram {r['bigram']['perplexity']:.1f}, "
          f"trained {r['trained']['perplexity']:.1f} in {r['seconds']:.0f} s")
    for s in r["samples"]:
        print(repr(s["prompt"] + s["text"][:200]))
    assert r["trained"]["perplexity"] < r["bigram"]["perplexity"] < r["untrained"]["perplexity"]
    assert r["trained"]["perplexity"] < r["untrained"]["perplexity"] / 10

"""Faults a user can cause around generation: a compiled-step cache that is not theirs alone, a
broken or half-built library, a mismatched struct layout; a request too large for memory."""

import ctypes
import os
import shutil
import subprocess
import sys

import pytest
import torch

import lmforge
from lmforge.config import GenerateConfig, ModelConfig
from lmforge.generate import Engine, limits
from lmforge.generate.cpu import build, layout, step
from lmforge.generate.kv_cache import KVCache
from lmforge.models.gpt import GPT
from tests.test_cli import assert_clear_error, run

COMPILER = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")


def tiny(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**dict(vocab_size=97, context_length=32, n_layer=2, n_head=4, d_model=32, dropout=0.0), **kw})
    return GPT(cfg).eval()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    step.reset()
    yield tmp_path / "cache" / "native"
    step.reset()


def built(folder):
    return sorted(folder.glob("decode-*.so"))


def plant(path, data: bytes):
    """A new file at `path` (the one this process has loaded stays mapped: writing into it would crash it)."""
    path.unlink()
    path.write_bytes(data)


@needs_cc
def test_a_library_that_fails_to_load_is_built_again(cache):
    build.build(COMPILER)
    (lib,) = built(cache)
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    plant(lib, b"not a shared library")
    fresh = subprocess.run([sys.executable, "-c", f"from lmforge.generate.cpu import build; build.build({COMPILER!r})"],
                           capture_output=True, text=True)  # a new process: this one has the old library mapped
    assert fresh.returncode == 0, fresh.stderr
    assert lib.read_bytes()[:4] == b"\x7fELF"


@needs_cc
def test_a_library_or_folder_that_is_not_ours_alone_is_never_loaded(cache, monkeypatch):
    build.build(COMPILER)
    (lib,) = built(cache)
    plant(lib, b"planted")  # it would fail to load: if it is read at all, the test sees an error
    os.chmod(lib, 0o666)  # writable by others: rebuilt in place, never opened
    opened = []
    real = build._open
    monkeypatch.setattr(build, "_open", lambda p: opened.append(p) or real(p))
    build.build(COMPILER)
    assert opened == [lib] and lib.read_bytes()[:4] == b"\x7fELF" and not lib.stat().st_mode & 0o022
    uid = os.geteuid()
    if uid == 0:
        os.chown(lib, 12345, -1)  # another user's
    else:
        monkeypatch.setattr(build.os, "geteuid", lambda: 12345)  # or seen as another user
    assert not build._trusted_file(lib)
    monkeypatch.setattr(build.os, "geteuid", lambda: uid)
    os.chown(lib, uid, -1)
    os.chmod(cache, 0o777)  # the folder itself: anyone could swap a library in; built in a private folder
    opened.clear()
    assert build.build(COMPILER) is not None
    assert opened and opened[0].parent != cache and not opened[0].parent.exists()  # private, then removed


@needs_cc
def test_killed_compiles_leave_no_build_folders(cache):
    build.build(COMPILER)
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = cache / f"{build.BUILD_PREFIX}{dead.pid}-x"
    leftover.mkdir()
    (leftover / "decode-half.so").write_bytes(b"half")
    running = cache / f"{build.BUILD_PREFIX}{os.getpid()}-y"  # a compile of a live process is left alone
    running.mkdir()
    for lib in built(cache):
        lib.unlink()
    build.build(COMPILER)
    assert not leftover.exists() and running.exists()
    running.rmdir()
    assert [p.name for p in cache.iterdir() if not p.name.startswith("decode-")] == []


@needs_cc
def test_a_mismatched_struct_layout_is_refused_and_decoding_falls_back(cache, monkeypatch):
    lib = build.build(COMPILER)
    assert layout.layout_mismatch(lib) is None

    class Shifted(ctypes.Structure):  # n_layer as a 64-bit int: every later field moves
        _fields_ = [(n, ctypes.c_longlong if n == "n_layer" else t) for n, t in layout.Model._fields_]

    assert "struct layout differs" in layout.layout_mismatch(lib, (layout.Layer, Shifted))
    monkeypatch.setattr(build, "layout_mismatch", lambda lib: layout.layout_mismatch(lib, (layout.Layer, Shifted)))
    step.reset()
    model = tiny()
    engine = Engine(model)
    assert engine.backend == "torch" and "struct layout differs" in engine.backend_reason
    gen = GenerateConfig(max_new_tokens=6, temperature=0)
    assert engine.generate([[1, 2]], gen) == Engine(model, backend="torch").generate([[1, 2]], gen)


def test_requests_too_large_for_memory_are_refused_up_front(trained_run, monkeypatch):
    lm = lmforge.load(trained_run)
    monkeypatch.setattr(limits, "free_memory", lambda device: 2 ** 26)  # 64 MiB free
    allocated = []
    monkeypatch.setattr(KVCache, "__init__", lambda *a, **k: allocated.append(a))
    with pytest.raises(lmforge.LmforgeError, match=r"needs ~[\d.,]+ GiB .*KV cache.*0.1 GiB is free.*lower num_samples"):
        lm.generate("ROMEO:", max_new_tokens=5, num_samples=100000)
    with pytest.raises(lmforge.LmforgeError, match="lower num_beams"):
        lm.generate("ROMEO:", max_new_tokens=200, num_beams=5000)
    with pytest.raises(lmforge.LmforgeError, match="lower num_samples"):
        next(lm.stream("ROMEO:", num_samples=100000))
    assert allocated == []  # refused before any cache was made


def test_the_cache_holds_the_prompt_and_the_reply_not_the_whole_context(tmp_path, monkeypatch):
    from lmforge.tokenizer import train_char
    from lmforge.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "run", tiny(context_length=131072, position="rope"), train_char(["abcdef "]))
    lm = lmforge.load(tmp_path / "run")
    sizes = []
    real = KVCache.__init__
    monkeypatch.setattr(KVCache, "__init__", lambda self, *a, **k: sizes.append(a[3]) or real(self, *a, **k))
    monkeypatch.setattr(limits, "free_memory", lambda device: 2 ** 30)
    assert isinstance(lm.generate("abc", max_new_tokens=5, temperature=0), str)
    assert isinstance(lm.generate("abc", max_new_tokens=5, num_beams=3), str)
    assert sizes == [3 + 5, 3 + 5]  # not 131,072 slots


def test_cli_refuses_an_impossible_request_in_one_line(trained_run, capsys):
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--num-samples", "100000000",
                            "--max-new-tokens", "20")[::2], "GiB", "KV cache", "num_samples")
    assert_clear_error(*run(capsys, "generate", str(trained_run), "x", "--beams", "50000000",
                            "--max-new-tokens", "20")[::2], "GiB", "num_beams")


def test_generate_json_says_which_backend_ran_and_why(trained_run, capsys):
    import json

    code, out, _ = run(capsys, "generate", str(trained_run), "x", "--max-new-tokens", "3", "--json")
    result = json.loads(out)
    lm = lmforge.load(trained_run)
    assert code == 0 and result["backend"] == lm.backend in ("native", "torch") and result["backend_reason"]
    assert lmforge.load(trained_run, backend="torch").backend == "torch"
    with pytest.raises(lmforge.LmforgeError, match="backend must be one of auto, native, torch"):
        lmforge.load(trained_run, backend="cuda-graphs")

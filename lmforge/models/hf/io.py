"""A Hugging Face model directory read once, and written atomically.

`HFDir.read(path)` parses the small JSON files (config.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json) once; the weights' index (one model.safetensors, or
shards named by model.safetensors.index.json, each joined with `io.safe_join`, so an index cannot
point outside the directory or at a FIFO), the safetensors headers and tokenizer.json's text are read
when first asked for. `write_dir` writes an `HFExport` through `io.atomic_dir`: a full disk or an
unwritable place is one error and leaves nothing behind.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir, safe_join, safetensors_header

MAX_JSON = 64 * 2**20  # a config or tokenizer_config.json is kilobytes; refuse to parse gigabytes
INDEX = "model.safetensors.index.json"


def read_text(path: Path, limit: int = MAX_JSON) -> str | None:
    """A regular file's text, or None where there is none; a FIFO or device is never opened (reading
    one would hang), and a file over `limit` bytes is refused."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise LmforgeError(f"{path} is not a regular file; replace it with the file it should be")
    if st.st_size > limit:
        raise LmforgeError(f"{path} is {st.st_size:,} bytes, too large to be what its name says; restore the file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LmforgeError(f"cannot read {path} ({e}); restore the file") from None


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None where the file is absent, damaged or not an object."""
    try:
        obj = json.loads(read_text(path) or "null")
    except (ValueError, LmforgeError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class HFDir:
    """One Hugging Face model directory: its parsed JSON files, read once."""

    path: Path
    config: dict
    tokenizer_config: dict = field(default_factory=dict)
    special_tokens_map: dict = field(default_factory=dict)
    generation_config: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> "HFDir":
        path = Path(path)
        config = read_json(path / "config.json")
        if config is None:
            raise LmforgeError(f"cannot read {path / 'config.json'} as a JSON object; give a Hugging Face model "
                               "directory with a valid config.json")
        return cls(path, config, *(read_json(path / name) or {} for name in
                                   ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")))

    @cached_property
    def tokenizer_json(self) -> str | None:
        """tokenizer.json's text, or None where the directory has none."""
        return read_text(self.path / "tokenizer.json", limit=1 << 30)

    @cached_property
    def weight_files(self) -> list[Path]:
        """The safetensors files holding the weights: the shards the index names, or model.safetensors."""
        index = self.path / INDEX
        if index.exists():
            try:
                weight_map = json.loads(read_text(index) or "")["weight_map"]
                names = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise LmforgeError(f"{index} is not a valid shard index; download or save the model again") from None
            return [safe_join(self.path, name, "weight shard") for name in names]
        if (self.path / "model.safetensors").is_file():
            return [self.path / "model.safetensors"]
        raise LmforgeError(f"{self.path} has no model.safetensors (a pickled pytorch_model.bin is not loaded); "
                           "re-save the model with transformers' save_pretrained, which writes safetensors")

    def weight_header(self) -> dict[str, dict]:
        """Every tensor's name -> {"dtype", "shape", ...}, from the files' headers alone (nothing allocated)."""
        table: dict[str, dict] = {}
        for f in self.weight_files:
            table.update(safetensors_header(f))
        return table

    def read_weights(self) -> dict[str, torch.Tensor]:
        weights: dict[str, torch.Tensor] = {}
        for f in self.weight_files:
            try:
                weights.update(load_file(str(f)))
            except (SafetensorError, OSError) as e:
                raise LmforgeError(f"{f} is missing or damaged ({str(e)[:120]}); download or save it again") from None
        return weights


def as_dir(path: "HFDir | str | Path") -> HFDir:
    return path if isinstance(path, HFDir) else HFDir.read(path)


@dataclass
class HFExport:
    """What a mapping turns a model into: config.json, the tensors under Hugging Face names, other JSON
    files (generation_config.json), and the tokenizer with its special tokens (role -> (token, id)) and
    the settings added to tokenizer_config.json."""

    config: dict
    tensors: dict[str, torch.Tensor]
    context_length: int
    files: dict[str, dict] = field(default_factory=dict)
    tokenizer_json: str | None = None
    specials: dict[str, tuple[str, int]] = field(default_factory=dict)
    tokenizer_settings: dict = field(default_factory=dict)


def check_empty(out: str | Path) -> Path:
    """`out` as the place to write (a link to a directory: the directory it points to), refused unless it is
    absent or an empty directory."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"{out} already exists and is not an empty directory; choose a new output directory or "
                           "remove it")
    return out


def write_dir(out: str | Path, export: HFExport) -> Path:
    """A directory `transformers` (AutoModel*, AutoTokenizer) reads: config.json, model.safetensors, the
    export's other JSON files, and tokenizer.json + special_tokens_map.json + tokenizer_config.json."""
    out = check_empty(out)

    def write(folder: Path, name: str, obj: dict) -> None:
        (folder / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    with atomic_dir(out) as tmp:
        write(tmp, "config.json", export.config)
        for name, obj in export.files.items():
            write(tmp, name, obj)
        try:
            save_file({k: v.contiguous() for k, v in export.tensors.items()}, str(tmp / "model.safetensors"),
                      metadata={"format": "pt"})
        except SafetensorError as e:  # its own I/O errors (a full disk) come as this, not as OSError
            raise LmforgeError(f"cannot write {out / 'model.safetensors'} ({str(e)[:160]}); free some space, or "
                               "write somewhere else") from None
        if export.tokenizer_json is not None:
            (tmp / "tokenizer.json").write_text(export.tokenizer_json, encoding="utf-8")
            tokens = {f"{role}_token": tok for role, (tok, _) in export.specials.items()}
            write(tmp, "special_tokens_map.json", tokens)
            write(tmp, "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", **tokens,
                                                 "model_max_length": export.context_length,
                                                 "clean_up_tokenization_spaces": False, **export.tokenizer_settings})
    return out

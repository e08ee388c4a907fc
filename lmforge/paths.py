"""Where lmforge keeps what it downloads or derives (corpora, token shards).

`LMFORGE_CACHE` overrides the location; otherwise `$XDG_CACHE_HOME/lmforge` or `~/.cache/lmforge`.
"""

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("LMFORGE_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "lmforge"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

"""What a fine-tuned run remembers of its task: the settings it was fine-tuned with."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lmforge.config import SHORTHANDS


def saved_task(run: str | Path) -> dict:
    """The task settings a run was fine-tuned with: recipe.yaml's task: section, or an earlier
    version's finetune.json (its settings by shorthand name), or none (a Hugging Face directory)."""
    run = Path(run)
    try:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))
        if isinstance(recipe, dict) and isinstance(recipe.get("task"), dict):
            return recipe["task"]
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        pass
    try:
        old = json.loads((run / "finetune.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    config = old.get("config") if isinstance(old, dict) else None
    if not isinstance(config, dict):
        return {}
    return {SHORTHANDS[k].split(".")[1]: v for k, v in config.items() if SHORTHANDS.get(k, "").startswith("task.")}

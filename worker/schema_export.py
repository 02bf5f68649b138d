"""JSON Schemas in `schemas/`, generated from the pydantic models (the models are the source of truth)."""
from __future__ import annotations

import json
from pathlib import Path

from .models import SCHEMAS, Article


def render(name: str) -> str:
    """The schema file's exact text for one model: what producers may send for the input article, what the worker
    writes for its outputs (a field with a default is always there)."""
    model = SCHEMAS[name]
    mode = "validation" if model is Article else "serialization"
    return json.dumps(model.model_json_schema(mode=mode), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = directory / name
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path) -> list[str]:
    """Names of schema files that are missing or differ from what the models generate."""
    return [name for name in SCHEMAS
            if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != render(name)]

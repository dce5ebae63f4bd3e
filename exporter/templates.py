"""Rendering of the files in templates/: `@KEY@` placeholders replaced by given text."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ExportError

ROOT = Path(__file__).resolve().parents[1] / "templates"


def render(relative_path: str, fields: dict[str, str], keep: tuple[str, ...] = ()) -> str:
    """The template with every @KEY@ of `fields` filled; any other @KEY@ left is an internal
    error unless listed in `keep` (placeholders meant for CMake's own configure step)."""
    text = (ROOT / relative_path).read_text()
    for key, value in fields.items():
        text = text.replace(f"@{key}@", value)
    leftover = sorted(set(re.findall(r"@([A-Z][A-Z_]*)@", text)) - set(keep))
    if leftover:
        raise ExportError(f"internal: template {relative_path} has unfilled fields {leftover}")
    return text

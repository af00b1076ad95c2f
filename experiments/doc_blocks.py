"""Generated blocks in Markdown files: text between ``<!-- name:start -->`` and ``<!-- name:end -->`` that a
command writes and a test checks, so documented figures cannot drift from the code that makes them."""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of block ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _pattern(name: str) -> re.Pattern[str]:
    start, end = markers(name)
    return re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)


def read_block(path: Path, name: str) -> str:
    """The block ``name`` of ``path``, markers included; `SystemExit` naming the file if it has none."""
    m = _pattern(name).search(path.read_text(encoding="utf-8"))
    if m is None:
        start, end = markers(name)
        raise SystemExit(f"{path}: markers {start} … {end} not found")
    return m.group(0)


def splice(path: Path, name: str, block: str) -> tuple[str, str]:
    """(the file's text, the text with block ``name`` replaced by ``block``, which carries its markers)."""
    read_block(path, name)  # names the file if the markers are missing
    text = path.read_text(encoding="utf-8")
    return text, _pattern(name).sub(lambda _: block, text)

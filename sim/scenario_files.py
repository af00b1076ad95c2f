"""Scenario files before the schema: finding a shipped scenario or a TOML path, reading it, ``--set`` overrides,
and turning validation errors into one line per bad field."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "experiments" / "scenarios"


class _Model(BaseModel):
    """Base of every scenario section. allow_inf_nan=False: NaN/inf in any float field (lists included) is an error
    naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ScenarioError(ValueError):
    """A scenario file or override is invalid; ``str(err)`` names the field, value and what is allowed."""


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    """``"; allowed: a, b, …; did you mean 'x'?"`` for the table holding ``loc[-1]`` ("" when unknown)."""
    from sim.scenario import Scenario

    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        model = _model_of(field.annotation) if field is not None else None
    if model is None:
        return ""
    allowed = sorted(model.model_fields)
    near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if not near:  # a key of another table (``horizon_h`` at the top level): name its full path
        here = [str(p) for p in loc[:-1]]
        elsewhere: dict[str, list[str]] = {}
        for path in _field_paths(Scenario) + _mechanism_parameter_paths():
            elsewhere.setdefault(path.rsplit(".", 1)[-1], []).append(path)
        keys = difflib.get_close_matches(str(loc[-1]), list(elsewhere), n=1, cutoff=0.85)
        # of the paths ending in that key, the one nearest the table the key was written in (fleet.name: the group's)
        near = [max(elsewhere[k], key=lambda path: _shared_prefix(path.split("."), here)) for k in keys]
    return f"; allowed: {', '.join(allowed)}" + (f"; did you mean '{near[0]}'?" if near else "")


def _shared_prefix(a: list[str], b: list[str]) -> int:
    """How many leading parts two dotted paths share (list indices count as equal to ``0``)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y and not (x.isdigit() and y.isdigit()):
            break
        n += 1
    return n


def _mechanism_parameter_paths() -> list[str]:
    """``market.params.<mechanism>.<parameter>`` for every shipped mechanism (imported only on this error path)."""
    from markets.base import available, get

    return [f"market.params.{m}.{p}" for m in available() for p in getattr(get(m), "parameters", {})]


def _field_paths(model: Any, prefix: str = "") -> list[str]:
    """Every key of ``model`` and its sub-tables as a dotted path (list tables by their first entry, ``.0.``)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        sub = _model_of(field.annotation)
        if sub is not None:
            is_list = "list" in str(field.annotation)
            paths += _field_paths(sub, f"{path}.0." if is_list else f"{path}.")
    return paths


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        # a key with a NUL or control character is shown escaped, so the message stays one printable line
        loc = ".".join(
            str(x) if str(x).isprintable() else repr(str(x)) for x in e["loc"] if not str(x).startswith("function-")
        )
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":  # an unknown key: say what is allowed there and the nearest one
            msg = "unknown key" + _allowed_keys(e["loc"])
        got = e.get("input")
        if isinstance(got, dict) or e["type"] == "missing":
            lines.append(f"{loc}: {msg}" if loc else msg)
        else:
            lines.append(f"{loc}: {msg} (got {got!r})" if loc else f"{msg} (got {got!r})")
    return "\n".join(lines)


def resolve_path(name_or_path: str | Path) -> Path:
    """A shipped scenario's name (``default``) or a path to a TOML file."""
    p = Path(name_or_path)
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    # a folder that happens to carry a shipped scenario's name (e.g. an earlier `--out default`) is not the scenario
    if p.suffix == ".toml" or p.is_file() or (p.exists() and not shipped.is_file()):
        if not p.is_file():
            raise ScenarioError(f"scenario: '{p}' is not a file" if p.exists() else f"scenario: file '{p}' not found")
        return p
    if not shipped.is_file():
        raise ScenarioError(
            f"scenario: '{name_or_path}' is neither a file nor a shipped scenario; allowed: {', '.join(list_scenarios())}"
        )
    return shipped


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors into one-line `ScenarioError`s."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ScenarioError(f"{path.name}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(
            f"{path.name}: not UTF-8 text (invalid byte 0x{raw[err.start]:02x} at byte offset {err.start})"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path.name}: not valid TOML: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value``; the value is read as a TOML literal, else as a string."""
    if "=" not in text:
        raise ScenarioError(f"--set {text}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ScenarioError(f"--set {text}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw scenario mapping (a deep copy is returned)."""
    out = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(f"--set {text}: '{where}' needs a list index in 0..{len(node) - 1}")
                node = node[int(part)]
            else:
                if not isinstance(node, dict):
                    raise ScenarioError(f"--set {text}: '{where}' is not a table")
                node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ScenarioError(f"--set {text}: needs a list index in 0..{len(node) - 1}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ScenarioError(f"--set {text}: '{'.'.join(path[:-1])}' is not a table")
    return out


def list_scenarios() -> list[str]:
    """Names of the shipped scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def describe_scenarios() -> list[tuple[str, str]]:
    """(name, one-line description) of each shipped scenario."""
    out = []
    for name in list_scenarios():
        data = read_toml(SCENARIO_DIR / f"{name}.toml")
        out.append((name, str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""))
    return out

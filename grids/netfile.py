"""Reading a network file without letting it run code.

A scenario with ``grid.case = "file"`` names a file that may come from anyone, so reading it must never execute
code. Formats:

* ``.json`` — pandapower's JSON. pandapower's own reader imports every object's ``_module`` *before* its allow-list
  check (and resolves ``function`` objects by import), so a crafted file could import arbitrary code. We therefore
  parse the text with the plain `json` module first, walk every object — including the JSON documents pandapower
  nests inside strings (DataFrames, the net itself in old files) — and refuse the file unless every
  ``(_module, _class)`` pair is one of the plain data types pandapower writes for a network (`ALLOWED_OBJECTS`,
  numpy scalar types, builtins tuple/set/frozenset/complex). As a second guard, the number of ``_module`` tags we
  found must equal the number of ``_module`` substrings in the raw text (an object we could not see is refused).
  Only then is the same text handed to pandapower.
* ``.mat`` — MATPOWER case files through `pandapower.converter.from_mpc` (`scipy.io.loadmat`, no code runs).
* ``.m`` — MATPOWER version-2 case files, read by our own text parser (`read_matpower_m`: plain
  ``mpc.<field> = <number | 'text' | [matrix]>;`` assignments, nothing evaluated; any other statement on ``mpc``
  is refused, never ignored) and converted by `pandapower.converter.from_ppc`. (pandapower's own ``.m`` route needs
  the package `matpowercaseframes`, which is not installed.)
* ``.p`` / ``.pkl`` / ``.pickle`` — pickles execute code by design. They load only when the user opts in on the
  command line (``--trust-pickle``, which sets ``EVGRID_TRUST_PICKLE=1`` for this process and its workers), with a
  warning. A scenario file cannot opt in: the scenario is exactly the untrusted input.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

TRUST_PICKLE_ENV = "EVGRID_TRUST_PICKLE"

JSON_SUFFIXES = (".json",)
MATPOWER_SUFFIXES = (".m", ".mat")
PICKLE_SUFFIXES = (".p", ".pkl", ".pickle")

# (module, class) pairs pandapower's JSON writer emits for a network's data (see pandapower.io_utils
# to_serializable): the net itself, its tables and indices. Anything else (controllers, functions, enums, geometry,
# networkx graphs) is refused — the simulation reads none of it.
ALLOWED_OBJECTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("pandapower.auxiliary", "pandapowerNet"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.series", "Series"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas", "MultiIndex"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.indexes.multi", "MultiIndex"),
        ("numpy", "array"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
    }
)


class NetworkFileError(ValueError):
    """A network file is missing, unreadable, of an unsupported kind or not safe to load."""


def _numpy_scalar_class(name: str) -> bool:
    """True if ``numpy.<name>`` is a numpy scalar type (numpy is already imported; getattr imports nothing)."""
    import numpy as np

    cls = getattr(np, name, None) if name.isidentifier() else None
    return isinstance(cls, type) and issubclass(cls, np.generic)


def _allowed(module: Any, cls: Any) -> bool:
    if not isinstance(module, str) or not isinstance(cls, str):
        return False
    if (module, cls) in ALLOWED_OBJECTS:
        return True
    return module == "numpy" and _numpy_scalar_class(cls)


def scan_pandapower_json(text: str, where: str = "grid.file") -> None:
    """Refuse a pandapower JSON document that names any object outside the data allow-list.

    Nothing is imported or constructed: the text is read with the plain `json` module only. Raises
    `NetworkFileError` naming the first offending ``_module``/``_class``.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise NetworkFileError(f"{where}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not (
        isinstance(doc, dict) and doc.get("_module") == "pandapower.auxiliary" and doc.get("_class") == "pandapowerNet"
    ):
        raise NetworkFileError(
            f"{where}: not a pandapower network (top-level object must be pandapower.auxiliary.pandapowerNet)"
        )
    found = 0
    stack: list[Any] = [doc]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            if "_module" in o or "_class" in o:
                found += "_module" in o
                module, cls = o.get("_module"), o.get("_class")
                if not _allowed(module, cls):
                    raise NetworkFileError(
                        f"{where}: refusing object _module={module!r} _class={cls!r}; a network file may hold only "
                        "pandapower/pandas/numpy data (see grids/netfile.py ALLOWED_OBJECTS)"
                    )
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, str) and o.lstrip()[:1] in ("{", "["):
            try:
                stack.append(json.loads(o))
            except json.JSONDecodeError:
                pass
    if found != text.count("_module"):
        raise NetworkFileError(f"{where}: holds '_module' tags that are not plain JSON objects; refusing to load it")


def trust_pickle_from_env() -> bool:
    """True when the user opted in to loading pickles (``--trust-pickle`` sets the environment variable)."""
    return os.environ.get(TRUST_PICKLE_ENV, "") == "1"


def load_network_file(file: str | Path, *, trust_pickle: bool | None = None, where: str = "grid.file") -> Any:
    """Load a network file as a pandapower net (see the module docstring for formats and safety).

    Args:
        file: path to a ``.json``, ``.m``, ``.mat`` or (opt-in) pickle file.
        trust_pickle: allow pickles; None reads the ``EVGRID_TRUST_PICKLE`` opt-in.
        where: the field named in error messages.
    Raises:
        NetworkFileError: one line naming the field, the file and what is allowed.
    """
    path = Path(file)
    if not path.is_file():
        raise NetworkFileError(f"{where}: '{file}' not found")
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise NetworkFileError(f"{where}: '{file}' is not UTF-8 text (byte offset {err.start})") from None
        except OSError as err:
            raise NetworkFileError(f"{where}: cannot read '{file}' ({err.strerror})") from None
        scan_pandapower_json(text, where=f"{where} '{file}'")
        import pandapower as pp

        try:
            net = pp.from_json_string(text)
        except Exception as err:  # pandapower raises many types for a bad file
            raise NetworkFileError(f"{where}: cannot read '{file}' as a pandapower network ({err})") from None
    elif suffix in MATPOWER_SUFFIXES:
        try:
            if suffix == ".m":
                from pandapower.converter.pypower import from_ppc

                ppc = read_matpower_m(path, where=where)
                net = from_ppc(ppc, f_hz=50)
            else:
                from pandapower.converter.matpower import from_mpc

                net = from_mpc(str(path), f_hz=50)
        except NetworkFileError:
            raise
        except Exception as err:  # the converter raises many types for a bad file
            raise NetworkFileError(f"{where}: cannot read '{file}' as a MATPOWER case ({err})") from None
    elif suffix in PICKLE_SUFFIXES:
        if not (trust_pickle if trust_pickle is not None else trust_pickle_from_env()):
            raise NetworkFileError(
                f"{where}: '{file}' is a pickle, which can run code when loaded; use a "
                "pandapower .json or MATPOWER .m/.mat file, or pass --trust-pickle if you trust it"
            )
        print(f"warning: loading pickle '{file}' (--trust-pickle): it can run arbitrary code", file=sys.stderr)
        import pandapower as pp

        try:
            net = pp.from_pickle(str(path))
        except Exception as err:
            raise NetworkFileError(f"{where}: cannot read '{file}' as a pandapower pickle ({err})") from None
    else:
        raise NetworkFileError(
            f"{where}: '{file}' has an unsupported extension '{path.suffix}'; allowed: "
            ".json (pandapower), .m/.mat (MATPOWER), .p/.pkl (pickle, with --trust-pickle)"
        )
    check_net(net, f"{where} '{file}'")
    return net


_M_ASSIGN = re.compile(r"mpc\.(\w+)\s*=\s*(\[[^\]]*\]|\{[^}]*\}|[^;]+?)\s*;", re.S)
_M_FUNCTION = re.compile(r"^\s*function\s+mpc\s*=\s*\w+\s*$", re.M)
_M_FIELDS = ("bus", "gen", "branch", "gencost")


def read_matpower_m(path: str | Path, where: str = "grid.file") -> dict[str, Any]:
    """Read a MATPOWER version-2 ``.m`` case file as a PYPOWER case dict without evaluating anything.

    Accepted: ``function mpc = name``, ``%`` comments and assignments ``mpc.<field> = <number>;``,
    ``mpc.<field> = 'text';`` and ``mpc.<field> = [ rows ];`` (entries separated by blanks or commas, rows by ``;``
    or line breaks; ``Inf``/``NaN`` allowed); cell arrays (``{...}``, e.g. ``bus_name``) are skipped. ``bus``,
    ``gen``, ``branch`` and ``baseMVA`` are required. Any other statement touching ``mpc`` (indexing such as
    ``mpc.branch(:, 6) = 0``, function calls) is refused: a case that changes itself cannot be read by a parser.

    Raises:
        NetworkFileError: one line naming the file and what is wrong.
    """
    import numpy as np

    name = Path(path).name
    try:
        text = Path(path).read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise NetworkFileError(f"{where}: cannot read '{name}' as text ({err})") from None
    # drop comments (MATPOWER cases quote text only in cell arrays and the version string, never with a '%')
    body = "\n".join(line.split("%", 1)[0] for line in text.splitlines())
    out: dict[str, Any] = {}
    rest = body
    for m in reversed(list(_M_ASSIGN.finditer(body))):
        rest = rest[: m.start()] + rest[m.end() :]
        key, raw = m.group(1), m.group(2).strip()
        if raw.startswith("{"):
            continue
        if raw.startswith("["):
            rows = [r for r in re.split(r"[;\n]", raw[1:-1]) if r.strip()]
            try:
                data = [[float(x) for x in re.split(r"[\s,]+", r.strip()) if x] for r in rows]
            except ValueError as err:
                raise NetworkFileError(f"{where}: '{name}': mpc.{key} holds a non-numeric entry ({err})") from None
            if len({len(r) for r in data}) > 1:
                raise NetworkFileError(f"{where}: '{name}': mpc.{key} has rows of different lengths")
            out[key] = np.array(data, dtype=float)
        elif raw[:1] in ("'", '"'):
            out[key] = raw.strip("'\"")
        else:
            try:
                out[key] = float(raw)
            except ValueError:
                raise NetworkFileError(
                    f"{where}: '{name}': mpc.{key} = {raw[:40]!r} is not a number, text or matrix; only plain "
                    "MATPOWER case files can be read"
                ) from None
    stray = re.search(r"\bmpc\b[^\n]*", _M_FUNCTION.sub("", rest))
    if stray:
        raise NetworkFileError(
            f"{where}: '{name}': statement {stray.group(0).strip()[:60]!r} is not a plain assignment; only plain "
            "MATPOWER case files (mpc.<field> = value;) can be read"
        )
    missing = [k for k in ("baseMVA", "bus", "gen", "branch") if k not in out]
    if missing:
        raise NetworkFileError(f"{where}: '{name}': not a MATPOWER case (missing mpc.{', mpc.'.join(missing)})")
    ppc: dict[str, Any] = {"version": str(out.get("version", "2")), "baseMVA": float(out["baseMVA"])}
    for k in _M_FIELDS:
        if k in out:
            ppc[k] = out[k]
    return ppc


def check_net(net: Any, where: str) -> None:
    """The minimum a simulation needs: buses, a slack (external grid) and a connected feeder's elements."""
    if not hasattr(net, "bus") or not len(net.bus):
        raise NetworkFileError(f"{where}: the network has no buses")
    if not len(getattr(net, "ext_grid", ())):
        raise NetworkFileError(f"{where}: the network has no external grid (slack bus)")
    buses = set(net.bus.index)
    for table, cols in (
        ("line", ("from_bus", "to_bus")),
        ("trafo", ("hv_bus", "lv_bus")),
        ("load", ("bus",)),
        ("ext_grid", ("bus",)),
    ):
        df = getattr(net, table, None)
        if df is None or not len(df):
            continue
        for c in cols:
            bad = set(df[c]) - buses
            if bad:
                raise NetworkFileError(f"{where}: {table}.{c} refers to bus(es) {sorted(bad)[:5]} not in the bus table")

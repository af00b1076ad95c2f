"""Fuzz test of the front door (issues 14 item 5, 20 item 3): mutated scenario files through `evgrid validate`.

Two generators: a fixed list of >= 1,000 mutants (below) and a hypothesis search over fields and values (at the end).

Every shipped scenario is mutated deterministically (fixed seed, `random.Random`), byte-wise (flipped bytes,
truncation, invalid UTF-8, NUL bytes) and TOML-wise (each scalar replaced by a wrong type, NaN/inf, huge/negative
numbers, empty strings, strings with NUL; tables and lists swapped; unknown keys), and each mutant is validated
in-process through the CLI. Wanted: exit 0 or 2, never a traceback or an escaping exception; on exit 2 one
``error:`` line naming a field or the file; a NaN/inf put into the file is never accepted. A few accepted mutants
are also run (tiny horizon) through `evgrid run`.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from experiments.cli import app
from sim.scenario import SCENARIO_DIR, Scenario

# heavy (whole-module fixtures): left out of `make test-fast`, run by `make test`
pytestmark = pytest.mark.slow

SEED = 20261205
N_BYTE = 20  # byte-level mutants per shipped scenario
N_TOML = 40  # TOML-level mutants per shipped scenario
N_RUN = 20  # accepted mutants also run through `evgrid run`

runner = CliRunner()
# simbench-mv-year is simbench-mv-rural over a year: its mutants are that file's, and validating one builds its
# 365 000 sessions (10 s each; tests/test_shipped.py runs it on a short horizon)
SHIPPED = sorted(p for p in SCENARIO_DIR.glob("*.toml") if p.stem != "simbench-mv-year")
TOP_KEYS = tuple(Scenario.model_fields)

# replacements for a scalar: wrong types, non-finite, huge/negative, empty, NUL, containers
NON_FINITE = (math.nan, math.inf, -math.inf)
REPLACEMENTS: tuple[Any, ...] = (
    "abc",
    "",
    "a\x00b",
    True,
    -1,
    0,
    -1e308,
    1e308,
    10**18,
    -(10**18),
    2**80,
    *NON_FINITE,
    [1, 2],
    [],
    {"x": 1},
    {},
    0.5,
)


@dataclass(frozen=True)
class Mutant:
    """One mutated scenario file: its bytes, what was done, and the TOML path changed (empty for byte mutants)."""

    source: str
    what: str
    data: bytes
    path: tuple[str, ...] = ()
    non_finite: bool = False


def _leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, value) inside nested tables and lists, containers included (path components as strings)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        p = (*path, str(k))
        yield p, v
        yield from _leaves(v, p)


def _set(data: Any, path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def _dump(data: dict[str, Any]) -> bytes | None:
    try:
        return tomli_w.dumps(data).encode()
    except (TypeError, ValueError):  # e.g. a value TOML cannot hold
        return None


def _byte_mutants(rng: random.Random, path: Path) -> Iterator[Mutant]:
    raw = path.read_bytes()
    name = path.stem
    kinds = ("flip", "truncate", "invalid-utf8", "nul", "insert", "delete")
    for i in range(N_BYTE):
        kind = kinds[i % len(kinds)]
        b = bytearray(raw)
        at = rng.randrange(len(b))
        if kind == "flip":
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(b))
                b[j] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del b[at:]
        elif kind == "invalid-utf8":
            b[at:at] = rng.choice((b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"))
        elif kind == "nul":
            b[at:at] = b"\x00"
        elif kind == "insert":
            b[at:at] = bytes([rng.randrange(256)])
        else:
            del b[at : at + rng.randint(1, 8)]
        yield Mutant(name, f"{kind}@{at}", bytes(b))


def _toml_mutants(rng: random.Random, path: Path) -> Iterator[Mutant]:
    base = tomllib.loads(path.read_text())
    name = path.stem
    leaves = list(_leaves(base))
    scalars = [(p, v) for p, v in leaves if not isinstance(v, dict | list)]
    tables = [(p, v) for p, v in leaves if isinstance(v, dict)]
    lists = [(p, v) for p, v in leaves if isinstance(v, list)]
    made = 0
    # every scalar field replaced once by a NaN/inf or NUL-string (the issue: none of them may pass silently)
    for p, v in scalars:
        new: Any = rng.choice(NON_FINITE) if isinstance(v, int | float) and not isinstance(v, bool) else "x\x00y"
        data = _copy(base)
        _set(data, p, new)
        dumped = _dump(data)
        if dumped is not None:
            made += 1
            yield Mutant(name, f"{'.'.join(p)} = {new!r}", dumped, p, isinstance(new, float))
    while made < N_TOML + len(scalars):
        data = _copy(base)
        r = rng.random()
        if r < 0.6:
            p, _ = rng.choice(scalars)
            new = rng.choice(REPLACEMENTS)
            what = f"{'.'.join(p)} = {new!r}"
        elif r < 0.7 and tables:
            p, _ = rng.choice(tables)
            new = rng.choice(([1, 2], [], "table", 3))
            what = f"{'.'.join(p)} (table) = {new!r}"
        elif r < 0.8 and lists:
            p, _ = rng.choice(lists)
            new = rng.choice(({"a": 1}, {}, "list", 7, [math.nan], ["x"]))
            what = f"{'.'.join(p)} (list) = {new!r}"
        else:
            # an unknown key in the root or in a table
            holders = [((), data), *((tp, None) for tp, _ in tables)]
            tp, _ = rng.choice(holders)
            p = (*tp, rng.choice(("bogus", "horizon", "n_ev", "mechanisms", "x\x00")))
            new = rng.choice((1, "x", 2.5))
            what = f"{'.'.join(p)} (unknown key) = {new!r}"
        _set(data, p, new)
        dumped = _dump(data)
        if dumped is None:
            continue
        made += 1
        nf = isinstance(new, float) and not math.isfinite(new)
        nf = nf or (isinstance(new, list) and any(isinstance(x, float) and not math.isfinite(x) for x in new))
        yield Mutant(name, what, dumped, p, nf)


def _param_mutants(rng: random.Random) -> Iterator[Mutant]:
    """Every parameter of every registered mechanism, set to two bad values in the default scenario (validation
    checks every ``market.params`` table, whichever mechanism is selected)."""
    from markets.base import Mechanism, available, get

    base = tomllib.loads((SCENARIO_DIR / "default.toml").read_text())
    bad = [v for v in REPLACEMENTS if not isinstance(v, float) or math.isfinite(v)]  # NaN/inf: the schema's
    for mech in available():
        for param in sorted(cast(type[Mechanism], get(mech)).parameters):
            for new in rng.sample(bad, 2):
                data = _copy(base)
                data["market"].setdefault("params", {}).setdefault(mech, {})[param] = new
                dumped = _dump(data)
                if dumped is not None:
                    yield Mutant("default", f"market.params.{mech}.{param} = {new!r}", dumped, ("market", "params"))


def mutants() -> list[Mutant]:
    """All mutants of all shipped scenarios, in a fixed order (deterministic for a given SEED)."""
    rng = random.Random(SEED)
    out: list[Mutant] = []
    for path in SHIPPED:
        out += _byte_mutants(rng, path)
        out += _toml_mutants(rng, path)
    out += _param_mutants(rng)
    return out


def _check(res: Any, m: Mutant, file: Path) -> str | None:
    """What is wrong with a CLI result for mutant ``m`` (None when nothing)."""
    text = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return f"exception escaped: {type(res.exception).__name__}: {res.exception}"
    if "Traceback" in text:
        return "traceback in output"
    if res.exit_code not in (0, 2):
        return f"exit code {res.exit_code}"
    if res.exit_code == 2:
        errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
        if len(errors) != 1:
            return f"{len(errors)} error lines"
        line = errors[0]
        keys = (*TOP_KEYS, "scenario", *(re.escape(k) for k in m.path if k.isprintable() and not k.isdigit()))
        named = file.name in line or any(re.search(rf"\b{k}[.:\[]", line) for k in keys)
        named = named or any(repr(k) in line for k in m.path if not k.isprintable())  # shown escaped
        if not named:
            return f"error names no field or file: {line!r}"
    elif m.non_finite:
        return "NaN/inf accepted"
    return None


@pytest.fixture(scope="module")
def all_mutants() -> list[Mutant]:
    return mutants()


@pytest.fixture(scope="module")
def validated(all_mutants: list[Mutant], tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Mutant, Path, Any]]:
    """Each mutant written to a file and validated once (shared by the tests of this module)."""
    tmp = tmp_path_factory.mktemp("mutants")
    out = []
    for i, m in enumerate(all_mutants):
        f = tmp / f"m{i}.toml"
        f.write_bytes(m.data)
        out.append((m, f, runner.invoke(app, ["validate", str(f)])))
    return out


def test_mutants_are_many_and_deterministic(all_mutants: list[Mutant]) -> None:
    assert len(all_mutants) >= 500
    again = mutants()
    assert [m.data for m in again] == [m.data for m in all_mutants]


def test_validate_never_tracebacks(validated: list[tuple[Mutant, Path, Any]]) -> None:
    """Each mutant: exit 0 or 2, no traceback, one error line naming a field or the file, NaN/inf never accepted."""
    bad = []
    for m, f, res in validated:
        why = _check(res, m, f)
        if why:
            bad.append(f"{m.source}: {m.what}: {why}\n    {res.output.strip()[-300:]}")
    assert not bad, f"{len(bad)} of {len(validated)} mutants mishandled:\n" + "\n".join(bad[:40])
    accepted = sum(res.exit_code == 0 for _, _, res in validated)
    assert 0 < accepted < len(validated)  # the mutants exercise both outcomes


@pytest.mark.slow
@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow or NaN in a run is a silently wrong answer
def test_run_accepted_mutants(validated: list[tuple[Mutant, Path, Any]], tmp_path: Path) -> None:
    """Some TOML mutants `validate` accepts, run for an hour with 5 EVs: never a traceback, and never an input error
    (exit 2) that `validate` with the same overrides let through — validate makes every check run makes."""
    rng = random.Random(SEED + 1)
    accepted = [
        (m, f)
        for m, f, res in validated
        # a changed value, not free text; qubo-rtp's 118-bus market set-up costs minutes (left to its own tests)
        if res.exit_code == 0 and m.path[:1] not in ((), ("description",), ("paper",)) and m.source != "qubo-rtp-118bus"
    ]
    picked = rng.sample(accepted, min(N_RUN, len(accepted)))
    bad = []
    for j, (m, f) in enumerate(picked):
        out = tmp_path / f"out{j}"
        sets = ["--set", "fleet.n_evs=5", "--set", "time.horizon_h=1"]
        checked = runner.invoke(app, ["validate", str(f), *sets])
        res = runner.invoke(app, ["run", str(f), *sets, "--out", str(out), "-q", "--no-plots"])
        why = _check(res, m, f)
        if why is None and checked.exit_code == 0 and res.exit_code == 2:
            why = "validate accepted what run rejects"
        if why:
            bad.append(f"{m.source}: {m.what}: {why}\n    {res.output.strip()[-300:]}")
    assert not bad, "\n".join(bad)


def _scalar_paths(path: Path) -> list[tuple[str, ...]]:
    return [p for p, v in _leaves(tomllib.loads(path.read_text())) if not isinstance(v, dict | list)]


# hypothesis draws the field and the value: any float (NaN/inf included), ints past 64 bits, any text (NUL and
# control characters included), booleans, short lists of those
FUZZ_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.booleans(),
    st.lists(st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.integers()), max_size=3),
)


@st.composite
def _field_mutants(draw: st.DrawFn) -> Mutant:
    path = draw(st.sampled_from(SHIPPED))
    field = draw(st.sampled_from(_scalar_paths(path)))
    new = draw(FUZZ_VALUES)
    data = tomllib.loads(path.read_text())
    _set(data, field, new)
    dumped = _dump(data)
    assume(dumped is not None)  # a value TOML cannot hold (e.g. a lone surrogate) cannot be in a file
    nf = isinstance(new, float) and not math.isfinite(new)
    nf = nf or (isinstance(new, list) and any(isinstance(x, float) and not math.isfinite(x) for x in new))
    return Mutant(path.stem, f"{'.'.join(field)} = {new!r}", cast(bytes, dumped), field, nf)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=_field_mutants())
def test_validate_never_tracebacks_hypothesis(m: Mutant, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same contract for fields and values hypothesis chooses (derandomized: the same examples every run)."""
    f = tmp_path_factory.mktemp("hyp") / "m.toml"
    f.write_bytes(m.data)
    res = runner.invoke(app, ["validate", str(f)])
    why = _check(res, m, f)
    assert why is None, f"{m.source}: {m.what}: {why}\n    {res.output.strip()[-300:]}"

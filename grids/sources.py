"""Where a network comes from: the value of ``grid.case``.

* a shipped case: ``case33bw``, ``case33bw-dr``, ``case33bw-dlmp``, ``case118`` (built in `grids.network`);
* ``file``: a network file named by ``grid.file`` (pandapower JSON, MATPOWER ``.m``/``.mat``; see `grids.netfile`);
* ``pandapower:<name>``: a constructor of :mod:`pandapower.networks` from the allow-list `PANDAPOWER_NETWORKS`,
  called with the keyword arguments of ``grid.network_args`` (scalars only, names checked against the constructor's
  signature; ``**kwargs`` catch-alls are not opened);
* ``simbench:<code>``: a SimBench grid (``simbench.get_simbench_net(code)``, codes as listed by
  ``simbench.collect_all_simbench_codes()``), with its element profiles (one year, 15-min, absolute MW/MVAr per
  load and static generator, ``simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)``).

:func:`check_case` and :func:`check_network_args` are cheap (no network is built) so that ``evgrid validate`` and
the scenario schema can refuse a bad name at once; :func:`load_source` builds the pandapower net.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHIPPED_CASES: tuple[str, ...] = ("case33bw", "case33bw-dr", "case33bw-dlmp", "case118")
PANDAPOWER_PREFIX = "pandapower:"
SIMBENCH_PREFIX = "simbench:"

# Constructors of pandapower.networks a scenario may name: test cases, CIGRE, Kerber, Dickert, Oberrhein and a few
# synthetic grids (all build in seconds; the 1000+-bus transmission cases are left out on purpose: a 2-core machine
# co-simulates them far too slowly to be useful).
PANDAPOWER_NETWORKS: tuple[str, ...] = (
    "case4gs",
    "case5",
    "case6ww",
    "case9",
    "case14",
    "case24_ieee_rts",
    "case30",
    "case_ieee30",
    "case33bw",
    "case39",
    "case57",
    "case89pegase",
    "case118",
    "case145",
    "case300",
    "case_illinois200",
    "create_cigre_network_hv",
    "create_cigre_network_mv",
    "create_cigre_network_lv",
    "mv_oberrhein",
    "lv_schutterwald",
    "simple_mv_open_ring_net",
    "create_synthetic_voltage_control_lv_network",
    "create_dickert_lv_network",
    "create_kerber_dorfnetz",
    "create_kerber_landnetz_freileitung_1",
    "create_kerber_landnetz_freileitung_2",
    "create_kerber_landnetz_kabel_1",
    "create_kerber_landnetz_kabel_2",
    "create_kerber_vorstadtnetz_kabel_1",
    "create_kerber_vorstadtnetz_kabel_2",
    "kb_extrem_dorfnetz",
    "kb_extrem_landnetz_freileitung",
    "kb_extrem_landnetz_kabel",
    "kb_extrem_vorstadtnetz_1",
    "kb_extrem_vorstadtnetz_2",
)

#: SimBench profile resolution [min] and length [steps] (the profiles cover the leap year 2016).
SIMBENCH_STEP_MIN = 15.0


class SourceError(ValueError):
    """A network source is unknown, badly parametrised or cannot be built; the message is one line."""


@dataclass
class Source:
    """A pandapower net and what came with it.

    Attributes:
        net: the pandapower net.
        citation: where it comes from (printed with the results).
        load_p_mw: SimBench profiles only: power per in-service load, shape (n_t, n_load) [MW] (absolute, 15 min).
        load_q_mvar: SimBench only: reactive power per load, same shape [MVAr].
        sgen_p_mw: SimBench profiles only: active power per static generator, shape (n_t, n_sgen) [MW].
        load_index: pandapower indices of the loads (columns of ``load_p_mw``).
        sgen_index: pandapower indices of the static generators (columns of ``sgen_p_mw``).
        step_min: resolution of the profiles [min].
    """

    net: Any
    citation: str
    load_p_mw: np.ndarray | None = None
    load_q_mvar: np.ndarray | None = None
    sgen_p_mw: np.ndarray | None = None
    load_index: np.ndarray | None = None
    sgen_index: np.ndarray | None = None
    step_min: float = SIMBENCH_STEP_MIN


def allowed_cases_text() -> str:
    """The allowed values of ``grid.case`` in one line."""
    return (
        f"{', '.join(SHIPPED_CASES)}, file (with grid.file), pandapower:<name> "
        f"(name one of: {', '.join(PANDAPOWER_NETWORKS)}), simbench:<code> (e.g. simbench:1-LV-rural1--0-sw, "
        "simbench:1-MV-rural--0-sw; any code of simbench.collect_all_simbench_codes())"
    )


def simbench_codes() -> list[str]:
    """Every SimBench code the installed `simbench` package can build (no grid is built)."""
    import simbench

    return list(simbench.collect_all_simbench_codes())


def check_case(case: str) -> None:
    """Refuse an unknown ``grid.case`` with one line naming the value and what is allowed (no network is built)."""
    if case in SHIPPED_CASES or case == "file":
        return
    if case.startswith(PANDAPOWER_PREFIX):
        name = case[len(PANDAPOWER_PREFIX) :]
        if name not in PANDAPOWER_NETWORKS:
            raise SourceError(
                f"grid.case: unknown pandapower network '{name}'; allowed: pandapower:<name> with name one of "
                f"{', '.join(PANDAPOWER_NETWORKS)}"
            )
        return
    if case.startswith(SIMBENCH_PREFIX):
        code = case[len(SIMBENCH_PREFIX) :]
        codes = simbench_codes()
        if code not in codes:
            level = code.split("-")[:2]  # e.g. ["1", "LV"]: show the grids of that voltage level, scenario 0
            near = [c for c in codes if c.split("-")[:2] == level and c.endswith("-0-sw")][:8]
            near = near or [c for c in codes if c.endswith("--0-sw")][:8]
            raise SourceError(
                f"grid.case: unknown SimBench code '{code}'; allowed: one of simbench.collect_all_simbench_codes() "
                f"({len(codes)} codes, e.g. {', '.join(near)})"
            )
        return
    raise SourceError(f"grid.case: unknown '{case}'; allowed: {allowed_cases_text()}")


def _constructor_params(name: str) -> dict[str, inspect.Parameter]:
    import pandapower.networks as pn

    sig = inspect.signature(getattr(pn, name))
    return {
        p.name: p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def check_network_args(case: str, args: dict[str, Any]) -> None:
    """Refuse ``grid.network_args`` that the source does not take (one line naming key, value and what is allowed).

    Only ``pandapower:<name>`` takes arguments: the named parameters of the constructor (not its ``**kwargs``),
    each a scalar (bool, int, float or str).
    """
    if not args:
        return
    if not case.startswith(PANDAPOWER_PREFIX):
        raise SourceError(
            f"grid.network_args: {sorted(args)} given but grid.case = '{case}' takes no arguments; "
            "allowed only with grid.case = 'pandapower:<name>'"
        )
    name = case[len(PANDAPOWER_PREFIX) :]
    params = _constructor_params(name)
    for key, value in args.items():
        if key not in params:
            allowed = ", ".join(f"{k} (default {p.default!r})" for k, p in params.items()) or "none"
            raise SourceError(
                f"grid.network_args.{key}: not a parameter of pandapower.networks.{name}; allowed: {allowed}"
            )
        if not isinstance(value, (bool, int, float, str)):
            raise SourceError(
                f"grid.network_args.{key}: {value!r} is not a scalar; allowed: a bool, integer, number or string"
            )


def load_source(case: str, *, file: str | Path = "", network_args: dict[str, Any] | None = None) -> Source:
    """Build the pandapower net of ``grid.case`` (and, for SimBench, its element profiles).

    Raises:
        SourceError: unknown case, bad arguments, unreadable file or a constructor that fails (one line).
    """
    check_case(case)
    args = dict(network_args or {})
    check_network_args(case, args)
    if case == "file":
        from grids.netfile import NetworkFileError, load_network_file

        try:
            net = load_network_file(file)
        except NetworkFileError as err:
            raise SourceError(str(err)) from None
        return with_profiles(net, f"network file {Path(file).name}")  # a saved SimBench net keeps its profiles
    if case.startswith(PANDAPOWER_PREFIX):
        import pandapower.networks as pn

        name = case[len(PANDAPOWER_PREFIX) :]
        try:
            net = getattr(pn, name)(**args)
        except Exception as err:  # a constructor rejects bad argument values in many ways
            shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
            raise SourceError(
                f"grid.network_args: pandapower.networks.{name}({shown}) failed: {type(err).__name__}: {err}"
            ) from None
        return Source(net, f"pandapower.networks.{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})")
    if case.startswith(SIMBENCH_PREFIX):
        return _simbench(case[len(SIMBENCH_PREFIX) :])
    raise SourceError(f"grid.case: '{case}' is built in grids.network, not here")  # shipped cases


def _simbench(code: str) -> Source:
    import simbench as sb

    net = sb.get_simbench_net(code)
    # SimBench leaves "controllable" NaN where unset; pandapower's OPF needs booleans: its defaults are a free slack
    # (ext_grid True) and fixed injections (False)
    for element in ("ext_grid", "gen", "sgen", "load", "storage"):
        if element in net and len(net[element]) and "controllable" in net[element]:
            col = net[element]["controllable"]
            net[element]["controllable"] = col.astype(object).where(col.notna(), element == "ext_grid").astype(bool)
    source = with_profiles(
        net, f"SimBench {code} (simbench {sb.__version__}; Meinecke et al., Energies 13(12) 3290, 2020)"
    )
    if source.load_p_mw is None:
        raise SourceError(f"grid.case: SimBench {code} has no element profiles")
    return source


def has_simbench_profiles(net: Any) -> bool:
    """True if the net carries SimBench-style profiles (``net.profiles["load"]`` and a ``load.profile`` column)."""
    profiles = getattr(net, "profiles", None) if "profiles" in net else None
    return (
        isinstance(profiles, dict)
        and len(profiles.get("load", ())) > 0
        and "profile" in net.load
        and bool(net.load.profile.notna().any())
    )


def with_profiles(net: Any, citation: str) -> Source:
    """A `Source` of ``net`` with its SimBench-style element profiles (absolute, 15 min), if it carries them.

    Used for ``simbench:<code>`` and for a network file saved from a SimBench net (pandapower JSON keeps
    ``net.profiles``). A net without such profiles comes back without series.

    Raises:
        SourceError: the profiles are there but incomplete: an in-service load or sgen without a profile, or naming
            one ``net.profiles`` lacks (`grids.profiles.check_element_profiles`, naming the element), or a profile
            that is not finite.
    """
    if not has_simbench_profiles(net):
        return Source(net, citation)
    import simbench as sb

    from grids.profiles import ProfileError, check_element_profiles

    try:
        check_element_profiles(net)  # simbench would hold an element without a profile flat, or fail unnamed
    except ProfileError as err:
        raise SourceError(f"grid.case: {citation}: {err}") from None
    try:
        prof = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    except Exception as err:  # a hand-edited file may carry profiles simbench cannot read
        raise SourceError(
            f"grid.case: {citation}: its element profiles cannot be read ({type(err).__name__}: {err})"
        ) from None

    def table(element: str, column: str, index: np.ndarray) -> np.ndarray:
        df = prof.get((element, column))
        if df is None or not len(index):
            return np.zeros((0 if df is None else len(df), len(index)))
        return df.reindex(columns=index).to_numpy(float)

    load_idx = net.load.index[net.load.in_service.astype(bool)].to_numpy()
    sgen_idx = net.sgen.index[net.sgen.in_service.astype(bool)].to_numpy()
    lp = table("load", "p_mw", load_idx)
    lq = table("load", "q_mvar", load_idx)
    sp = table("sgen", "p_mw", sgen_idx)
    n_t = max(len(lp), len(sp))
    if n_t == 0:
        return Source(net, citation)
    for name, a, index in (("load p_mw", lp, load_idx), ("load q_mvar", lq, load_idx), ("sgen p_mw", sp, sgen_idx)):
        if a.shape[1] and len(a) != n_t:
            raise SourceError(f"grid.case: {citation}: {name} profiles have {len(a)} rows, the others {n_t}")
        bad = np.nonzero(~np.isfinite(a).all(axis=0))[0]
        if len(bad):
            element = name.split()[0]
            raise SourceError(
                f"grid.case: {citation}: {element} {index[bad[0]]} at bus {int(net[element].at[index[bad[0]], 'bus'])}"
                f": its {name} profile is missing or not finite"
                + (f" (and {len(bad) - 1} more {element}(s))" if len(bad) > 1 else "")
            )
    return Source(net, citation, load_p_mw=lp, load_q_mvar=lq, sgen_p_mw=sp, load_index=load_idx, sgen_index=sgen_idx)

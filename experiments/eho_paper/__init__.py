"""`eho-bilevel-10stations`: Priolkar & Kunkolienkar (`004_…`) — the paper's tables beside ours, judged.

:func:`run_eho_paper` does, for one seed (everything on the same 50 EVs, drawn by the simulation's own fleet
generator from the scenario):

1. **The paper's model** — a deterministic day-ahead bilevel problem over the day's known sessions
   (`markets.eho_bilevel.BilevelProblem`) — in three cases: *uncontrolled* (full rate from plug-in at the EV's own
   station, base prices), *EHO* with every user at their own station (``fixed``), and *EHO* where following
   users may charge at one of the ``reach`` stations nearest to theirs on the feeder (``choice``; eq. 20 and the
   paper's "redirect EV users" advice). Tables 4, 5, 7, 8, 10 and 11 are printed for both EHO cases beside the
   paper's numbers.
2. **The closed loop** — the co-simulation (SimPy port queues, Mesa agents, AC power flow) run with
   ``uncontrolled`` and with the ``eho-bilevel`` mechanism, which plans day-ahead on a forecast of the day (it
   cannot see the draws) and then schedules each arriving EV as its best response. In the simulation an EV's
   station is fixed before it arrives, so this is the ``fixed`` case.
3. **Table 9** — the weight study over the paper's seven (α1, α2, α3), with the Pareto trade-off plotted.
4. **Judging the search** — EHO against SciPy differential evolution and random search at the same number of
   objective evaluations (several seeds), and against the exact optimum of a small instance (2 EVs, one port,
   5 hourly slots), found by enumerating every lower-level response region and solving one LP per region
   (`markets.eho_bilevel.exact_upper_level`).

Outputs under ``out_dir``: ``tables/*.csv`` and ``*.md``, ``plots/*.png``, ``paper_comparison.md/.csv``.
"""

from __future__ import annotations

from experiments.eho_paper.cosim import EHO_VARIANTS, SIM_NOTE, eho_sim_table
from experiments.eho_paper.problem import SCENARIO, compare_searches, problem_from_scenario, small_instance
from experiments.eho_paper.run import NOTES, run_eho_paper
from experiments.eho_paper.tables import TABLE7, TABLE9, _summary, paper_tables

__all__ = [
    "EHO_VARIANTS",
    "NOTES",
    "SCENARIO",
    "SIM_NOTE",
    "TABLE7",
    "TABLE9",
    "_summary",
    "compare_searches",
    "eho_sim_table",
    "paper_tables",
    "problem_from_scenario",
    "run_eho_paper",
    "small_instance",
]

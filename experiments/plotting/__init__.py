"""Plots of runs and studies, in modules split along their seams.

* `common`: backend, output formats (``outputs.format``), time axis, table helpers, `_save`;
* `run`: time-series plots of one run and `plot_run`; `evs`: stations, charging outcome, session Gantt;
  `battery`: SOC over time, V2G revenue against battery wear;
  `network`: voltage along the feeder and the network map; `comparison`: `plot_comparison`;
* `study_common`, `study`, `study_factors`: plots of a stored study and `plot_study`.
"""

"""The clock and the model: scenarios, `CoSimulation`, random streams, attack taps, recorder, KPIs, `RunResult`."""

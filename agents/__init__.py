"""Mesa agents and their SimPy processes: EVs, stations, aggregator, DSO, market operator; fleet generation."""

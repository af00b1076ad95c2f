"""Suite-wide settings."""

import os

# Tests build their grids afresh: several count what a build does (power flows, numba compiles), and a cache entry
# written by one test must not stand in for another's build. tests/test_gridcache.py switches the cache on.
os.environ["EVGRID_GRID_CACHE"] = "off"

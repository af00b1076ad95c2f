"""Market clearing: one interface (`markets.base`) and a registry of mechanisms by name.

>>> from markets.base import available
>>> available()
['elasticity-dr', 'milp', 'uncontrolled']
"""

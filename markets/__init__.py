"""Market clearing: one interface (`markets.base`) and a registry of mechanisms by name.

>>> from markets.base import available
>>> available()
['eho-bilevel', 'elasticity-dr', 'external', 'milp', 'qubo-dlmp', 'qubo-rtp', 'uncontrolled']
"""

"""The core layer: the task and backend contracts, the runner, metrics and run records.

Imports no other layer of the package.
"""

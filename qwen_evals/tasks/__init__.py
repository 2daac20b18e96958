"""The benchmarks: one module (or small package) per task, selected by conf/task/*.yaml.

Imports the core and scoring layers only: never a backend, never analysis.
"""

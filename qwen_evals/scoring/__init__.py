"""Scoring helpers tasks share: answer extraction, numbers, Rouge-L, truncation, pass@k, code sandboxes.

Imports only the core layer.
"""

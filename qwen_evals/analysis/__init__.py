"""Analysis of finished runs: results table, leaderboard, card parity, paired comparisons, the nightly gate.

Reads run folders (summary.json, samples.jsonl) and imports the core layer
only: it never loads a model or a task.
"""

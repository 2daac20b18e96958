"""Hydra configs: one folder per group (model, precision, task, hydra/launcher), plus the card numbers."""

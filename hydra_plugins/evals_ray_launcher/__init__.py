"""A Hydra launcher that runs each job of a multirun as a Ray task."""

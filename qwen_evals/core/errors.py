"""User-facing errors: the message alone must tell what went wrong and where."""


class EvalError(Exception):
    """A problem with the user's input, data, config or machine (not a bug).

    `run_eval.py` prints the message without a stack trace and exits with status 2.
    """

"""Run untrusted Python programs (model-written code) and say how each one ended.

Every program runs in a fresh interpreter in its own temporary directory, and
`Sandbox.run_many` runs them in parallel, one worker thread per CPU core. The
result is an `ExecResult`: passed or not, and why not (`REASONS`). The design
follows nanochat's execution.py (a subprocess per program, limits, a docstring
that says what is and is not covered); the code is this project's own.

What is covered
- A fresh `python -I -S` subprocess per program (no state, no site-packages,
  no PYTHON* environment variables), cwd = a new temporary directory that is
  deleted afterwards; a scrubbed environment (PATH, HOME=TMPDIR=that directory,
  LANG); stdin is /dev/null and `sys.stdin` is closed.
- Limits set with setrlimit before the program starts: CPU time, address space
  (memory), size of any file written (stdout and stderr go to a file too, so a
  flood of output ends the program), process count, open files, no core dumps.
  The wall-clock limit is enforced from outside: the program's pid namespace,
  or else its process group, is killed when it runs out.
- When the suite runs as root (containers, CI), each program runs as a fresh
  unprivileged uid with no supplementary groups: the process-count limit
  applies to it (root is exempt from that limit), and the caller's files are
  protected by ordinary permissions (`rm -rf` of a 0700 directory fails). The
  interpreter is this one when that uid can execute it, else a system python3
  (`describe()` names it and its version).
- Where `unshare` is permitted, the program gets its own network namespace (a
  down loopback and nothing else: no address is reachable) and pid namespace
  (when the program ends or is killed, every process it started dies with it,
  even ones that called setsid). Otherwise a Python audit hook, installed
  before the program and not removable by it, blocks socket creation,
  subprocesses, exec/spawn and ctypes.
- When the program would run as the caller's own uid (non-root caller), the
  audit hook also blocks writing, deleting, renaming or chmod-ing paths outside
  the temporary directory, and signalling other processes.
- The verdict does not trust the program: `passed` needs a report, tagged with
  a random nonce, that the harness writes only after the whole program
  (completion, tests and the final `check(...)` call) ran to its end.
  `sys.exit(0)` or `os._exit(0)` before that, a redefined `check`, a rebound
  `AssertionError` or an atexit hook that exits 0 are therefore failures.

What is not covered
- This is not a security boundary against code written to escape it: no
  seccomp, no mount namespace, no container; the whole syscall interface of the
  kernel is reachable.
- A program that inspects the harness inside its own process (frames, `gc`)
  can read the nonce and forge a pass, or defuse the audit hook; the hook is a
  backstop for ordinary code, not for such an adversary.
- Without a uid switch (non-root caller) only Python-level file operations are
  checked; without a pid namespace, processes of a non-root run that leave the
  process group (setsid) survive it.
- World-writable places (/tmp, /dev/shm) stay writable by a switched uid when
  the guard is off; each file is capped by the file-size limit, but total disk
  use is not limited.
- Returned objects that lie (`__eq__` always True) pass `assert x == y`: the
  tests decide correctness, the sandbox only reports how they ended.
"""

from qwen_evals.scoring.sandbox.sandbox import REASONS, ExecResult, Sandbox

__all__ = ["REASONS", "ExecResult", "Sandbox"]

"""Run untrusted Python programs (model-written code) and say how each one ended.

Every program runs in a fresh interpreter in its own temporary directory, and
`Sandbox.run_many` runs them in parallel, one worker thread per CPU core. The
result is an `ExecResult`: passed or not, and why not (`REASONS`). The design
follows nanochat's execution.py (a subprocess per program, limits, a docstring
that says what is and is not covered); the code is this project's own.

Isolation (`Sandbox(isolation=...)`, recorded as `describe()["isolation"]`), the
strongest that works here unless chosen, with a warning when it is not bwrap:
- "bwrap" (bubblewrap, `bwrap.py`): a new root that holds only what the
  interpreter needs, read-only (shared libraries, its binary and standard
  library; site-packages hidden): no project, data, home or results directory,
  no /etc, no shell. /tmp (the working directory) and /dev/shm are private
  tmpfs of `file_size_mb` each, gone when the program ends; /proc is the
  program's own pid namespace's; every namespace is unshared (user, mount, pid,
  network, ipc, uts, cgroup) and no further user namespace can be made; the
  harness is the namespace's pid 1, so every process dies with it and the
  program cannot kill it.
- "unshare": own network namespace (a down loopback, nothing reachable) and pid
  namespace, but the host's filesystem and other processes' files in view.
- "process": only the process group; an audit hook blocks sockets,
  subprocesses, exec/spawn and ctypes.

What is covered in every mode
- A fresh `python -I -S` subprocess per program (no state, no site-packages,
  no PYTHON* environment variables); a scrubbed environment (PATH, HOME=TMPDIR=
  the working directory, LANG); stdin is /dev/null and `sys.stdin` is closed;
  the config and result pipes are the only descriptors passed in.
- Limits set with setrlimit before the program starts: CPU time, address space
  (memory), size of any file written (stdout and stderr go to a file too, so a
  flood of output ends the program), process count, open files, no core dumps.
  The wall-clock limit is enforced from outside: the program's pid namespace,
  or else its process group, is killed when it runs out.
- When the suite runs as root (containers, CI), each program runs as a fresh
  unprivileged uid with no supplementary groups (under bwrap, bwrap itself runs
  as that uid): the process-count limit applies to it (root is exempt from that
  limit), and the caller's files are protected by ordinary permissions. The
  interpreter is this one when that uid can execute it, else a system python3
  (`describe()` names it and its version).
- When the program would run as the caller's own uid without a mount namespace
  (non-root caller, no bwrap), the audit hook also blocks writing, deleting,
  renaming or chmod-ing paths outside the working directory, and signalling
  other processes.
- The verdict does not trust the program: `passed` needs a report, tagged with
  a random nonce, that the harness writes only after the whole program
  (completion, tests and the final `check(...)` call) ran to its end.
  `sys.exit(0)` or `os._exit(0)` before that, a redefined `check`, a rebound
  `AssertionError` or an atexit hook that exits 0 are therefore failures.
- A program the sandbox failed to start or never reached (the harness reports
  "start" before it runs the program) is `infra_error`, not a failure of the
  program; `check_infra_errors` fails a batch with more than 1% of them.

What is not covered
- No seccomp filter: the whole syscall interface of the kernel is reachable,
  so a kernel exploit escapes any of the modes. Run untrusted checkpoints in a
  VM as well.
- In-process forgeries cannot be stopped from inside one interpreter: a program
  that finds the harness's report channel through stack frames, `gc` or
  /proc/self/mem can read the nonce and forge a pass, or defuse the audit hook;
  returned objects that lie (`__eq__` always True) pass `assert x == y`. The
  tests decide correctness, the sandbox only reports how they ended.
- Without bwrap: the host's filesystem is readable (benchmark data included:
  a program can read the canonical solutions), files written to world-writable
  places (/tmp, /dev/shm, /var/tmp) stay after the run (each capped by the
  file-size limit, total disk use not), Unix sockets in the filesystem are
  reachable, and /proc shows every host process.
- Without a uid switch (non-root caller) and without bwrap, only Python-level
  file operations are checked; without a pid namespace, processes of a
  non-root run that leave the process group (setsid) survive it.
"""

from qwen_evals.scoring.sandbox.sandbox import REASONS, ExecResult, Sandbox, check_infra_errors

__all__ = ["REASONS", "ExecResult", "Sandbox", "check_infra_errors"]

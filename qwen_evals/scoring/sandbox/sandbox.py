"""The `Sandbox`: runs programs under limits, in parallel, and says how each ended (`ExecResult`)."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError
from qwen_evals.scoring.sandbox import harness
from qwen_evals.scoring.sandbox.isolation import MODES, Isolation
from qwen_evals.scoring.sandbox.processes import count_processes, kill_group, live_processes, wait_unreaped

REASONS = (
    "passed", "assertion", "exception", "syntax_error", "timeout", "memory", "exit", "killed", "output_limit",
    "infra_error",
)  # fmt: skip
"""passed; assertion (a test failed); exception (any other error); syntax_error
(the program does not compile); timeout (wall-clock or CPU limit); memory
(MemoryError at the memory limit); exit (the program ended before its tests
finished, e.g. sys.exit(0)); killed (a signal, e.g. SIGKILL or SIGSEGV);
output_limit (stdout/stderr reached the file-size limit); infra_error (the
sandbox failed: the program could not be started, or never reached; not the
program's fault, so not a failure of the model)."""

ISOLATIONS = tuple(mode.name for mode in MODES)

MAX_INFRA_ERROR_SHARE = 0.01
"""A batch where more programs than this share hit `infra_error` is an error (`check_infra_errors`)."""

UID_BASE = 1_000_000_000  # far above real accounts; each process uses its own block of a million uids
UID_BLOCK = 1_000_000
MAX_WORKERS = 64
DETAIL_CHARS = 2000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    reason: str  # one of REASONS
    detail: str = ""  # exception and line, signal, limit...
    seconds: float = 0.0
    output_tail: str = ""  # the end of stdout + stderr


class Sandbox:
    """Runs programs under limits; the isolation available here is probed on first use.

    Args:
        timeout_s: wall-clock limit per program (HumanEval's reference harness uses 3 s).
        memory_mb: address-space limit.
        file_size_mb: largest file the program may write, stdout/stderr included.
        max_processes: process (and thread) count limit for the program's uid.
        max_open_files: file descriptor limit.
        workers: programs run at once (default: the number of CPU cores).
        isolation: one of `ISOLATIONS`, strongest first: "bwrap" (every namespace, only the interpreter's
            files, read-only), "unshare" (network and pid namespaces), "process" (process group and uid only).
            None: the strongest that works here, with a warning when that is not bwrap.
        guard: Python audit-hook guard for files (None: when neither the uid nor the mount namespace is own).
        python: interpreter for the programs (None: this one, or a system python3
            the sandbox uid can execute).
    """

    def __init__(
        self,
        timeout_s: float = 3.0,
        memory_mb: int = 1024,
        file_size_mb: int = 16,
        max_processes: int = 16,
        max_open_files: int = 64,
        workers: int | None = None,
        isolation: str | None = None,
        guard: bool | None = None,
        python: str | None = None,
    ) -> None:
        if timeout_s <= 0 or memory_mb <= 0 or file_size_mb <= 0 or max_processes < 2 or max_open_files < 16:
            raise EvalError("sandbox limits must be positive (max_processes >= 2, max_open_files >= 16)")
        if isolation is not None and isolation not in ISOLATIONS:
            raise EvalError(
                f"sandbox isolation={isolation!r} is not one of {list(ISOLATIONS)} (or null: the strongest)"
            )
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.file_size_mb = file_size_mb
        self.max_processes = max_processes
        self.max_open_files = max_open_files
        self.workers = max(1, min(workers or os.cpu_count() or 1, MAX_WORKERS))
        self.isolation = isolation
        self.guard = guard
        self.python = python
        self._lock = threading.Lock()
        self._ready = False

    # ---- public ----------------------------------------------------------------

    def run(self, program: str) -> ExecResult:
        return self.run_many([program])[0]

    def run_many(self, programs: Sequence[str]) -> list[ExecResult]:
        """Results in the order of `programs`, computed `workers` at a time."""
        self._setup()
        if len(programs) <= 1:
            return [self._run_program(p) for p in programs]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self._run_program, programs))

    def describe(self) -> dict[str, Any]:
        self._setup()
        return {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "file_size_mb": self.file_size_mb,
            "max_processes": self.max_processes,
            "workers": self.workers,
            "isolation": self._isolation.name,
            **({"isolation_fallback": self._fallback} if self._fallback else {}),
            **self._isolation.notes(),
            "user": "a fresh unprivileged uid per program" if self._switch_user else "the caller's uid",
            "guard": {"network": self._guard_network, "files": self._guard_files},
            "python": self._python,
            "python_version": self._python_version,
        }

    def stray_processes(self) -> list[int]:
        """Pids still running under a sandbox uid (always empty without a uid switch)."""
        if not self._ready or not self._switch_user:
            return []
        return live_processes(set(self._used_uids))

    # ---- setup -----------------------------------------------------------------

    def _setup(self) -> None:
        with self._lock:
            if self._ready:
                return
            self._switch_user = os.geteuid() == 0
            self._base = tempfile.mkdtemp(prefix="evals-sandbox-")
            os.chmod(self._base, 0o711)  # sandbox uids may enter their own run dir, not list others
            weakref.finalize(self, shutil.rmtree, self._base, True)
            # A fresh uid for every program: its process-count limit is not shared, and
            # zombies of an earlier program (counted against that limit until some
            # init reaps them) cannot starve a later one.
            self._next_uid = itertools.count(UID_BASE + (os.getpid() % 1000) * UID_BLOCK)
            self._used_uids: set[int] = set()
            self._probe()
            self._ready = True

    def _probe(self) -> None:
        """Pick the strongest isolation and an interpreter that actually work here; warn when bwrap is not it."""
        pythons = [self.python] if self.python else _python_candidates()
        failures: list[str] = []
        for mode in [m for m in MODES if self.isolation in (None, m.name)]:
            if not mode.available():
                failures.append(f"{mode.name}: needs {mode.needs}")
                continue
            for python in pythons:
                if self._works(mode, python):
                    self._fallback = "; ".join(failures)
                    if failures:
                        log.warning(
                            "code sandbox: %s; programs run with the weaker isolation %r (see the README's "
                            "'Running model-written code')", self._fallback, mode.name,
                        )  # fmt: skip
                    return
            failures.append(f"{mode.name}: {self._last_failure}")
        raise EvalError(f"the code sandbox cannot run programs on this machine; {'; '.join(failures)}")

    def _works(self, mode: Isolation, python: str) -> bool:
        """Whether a probe program passes with this isolation and interpreter (which then stay chosen)."""
        self._isolation, self._python = mode, python
        self._guard_network = not mode.namespaces
        own_files = self._switch_user or mode.filesystem
        self._guard_files = self.guard if self.guard is not None else not own_files
        result = self._run_program("import sys, math, hashlib, re\nprint(sys.version.split()[0])\n")
        self._python_version = result.output_tail.strip()
        self._last_failure = f"{python}: {result.reason} {result.detail} {result.output_tail[-300:]}".strip()
        return result.passed

    # ---- one program -------------------------------------------------------------

    def _run_program(self, program: str) -> ExecResult:
        uid = None
        if self._switch_user:
            uid = next(self._next_uid)
            self._used_uids.add(uid)
        return self._run_one(program, uid)

    def _command(self, uid: int | None, run_dir: str, config_fd: int, result_fd: int) -> list[str]:
        prefix = self._isolation.command(uid, self._python, run_dir, self.file_size_mb << 20)
        return prefix + ["-I", "-S", "-c", harness.HARNESS, str(config_fd), str(result_fd)]

    def _rlimits(self, uid: int | None) -> list[tuple[str, int, int]]:
        cpu = ceil(self.timeout_s) + 1
        nproc = self.max_processes if uid is not None else count_processes(os.getuid()) + self.max_processes
        return [
            ("RLIMIT_CPU", cpu, cpu + 1),
            ("RLIMIT_AS", self.memory_mb << 20, self.memory_mb << 20),
            ("RLIMIT_FSIZE", self.file_size_mb << 20, self.file_size_mb << 20),
            ("RLIMIT_NPROC", nproc, nproc),
            ("RLIMIT_NOFILE", self.max_open_files, self.max_open_files),
            ("RLIMIT_CORE", 0, 0),
        ]

    def _run_one(self, program: str, uid: int | None) -> ExecResult:
        run_dir = tempfile.mkdtemp(dir=self._base)
        result_r, result_w = os.pipe()
        try:
            Path(run_dir, "program.py").write_text(program, encoding="utf-8")
            if uid is not None:
                for path in (run_dir, os.path.join(run_dir, "program.py")):
                    os.chown(path, uid, uid)
            nonce = secrets.token_hex(16)
            config = harness.config(nonce, self._guard_network, self._guard_files, self._rlimits(uid))
            config_r, config_w = os.pipe()
            os.write(config_w, config)
            os.close(config_w)
            inside = self._isolation.program_dir(run_dir)
            env = {"PATH": "/usr/bin:/bin", "HOME": inside, "TMPDIR": inside, "LANG": "C.UTF-8"}
            as_user = self._isolation.popen_user(uid)
            with tempfile.TemporaryFile(dir=self._base) as output:
                start = time.monotonic()
                try:
                    # close_fds (the default): the config and result pipes are the only descriptors passed.
                    proc = subprocess.Popen(
                        self._command(uid, run_dir, config_r, result_w), cwd=run_dir, env=env,
                        stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                        pass_fds=(config_r, result_w), start_new_session=True, **as_user,
                    )  # fmt: skip
                except (OSError, EvalError) as error:  # e.g. the interpreter is not executable by the sandbox uid
                    return ExecResult(False, "infra_error", f"could not start the sandbox: {error}")
                finally:
                    os.close(config_r)
                    os.close(result_w)
                    result_w = -1
                timed_out = not wait_unreaped(proc.pid, self.timeout_s)
                if timed_out:
                    self._isolation.kill_on_timeout(proc.pid)
                kill_group(proc.pid)  # safe: the unreaped leader still holds its pid
                proc.wait()
                self._isolation.kill_strays(uid)
                seconds = time.monotonic() - start
                size = os.fstat(output.fileno()).st_size
                output.seek(max(0, size - DETAIL_CHARS))
                tail = output.read().decode("utf-8", "replace")
            reports = harness.read_reports(result_r, nonce)
            capped = size >= self.file_size_mb << 20
            return self._verdict(reports, timed_out, capped, proc.returncode, seconds, tail)
        finally:
            os.close(result_r)
            if result_w >= 0:
                os.close(result_w)
            shutil.rmtree(run_dir, ignore_errors=True)

    def _verdict(
        self,
        reports: dict[str, tuple[str, str]],
        timed_out: bool,
        capped: bool,
        returncode: int | None,
        seconds: float,
        tail: str,
    ) -> ExecResult:
        """The reason a program ended, from the harness's reports first and the OS's view second."""

        def done(reason: str, detail: str = "") -> ExecResult:
            return ExecResult(reason == "passed", reason, detail, seconds, tail)

        if "start" not in reports:  # the harness never ran: the program did not either
            how = "timed out" if timed_out else f"ended with status {returncode}"
            return done("infra_error", f"the sandbox {how} before the program started: {tail[-300:].strip()}")
        if capped:
            return done("output_limit", f"stdout/stderr reached the file-size limit of {self.file_size_mb} MB")
        if "result" in reports:
            status, detail = reports["result"]
            return done(status if status in REASONS else "exception", detail)
        if timed_out:
            return done("timeout", f"wall-clock limit of {self.timeout_s:g} s")
        if "exit" in reports:
            how, value = reports["exit"]
            if how == "code":
                return done("exit", f"exited with status {value} before the tests finished")
            number = int(value)
            name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
            if number == signal.SIGXCPU:
                return done("timeout", f"CPU time limit ({name})")
            if number == signal.SIGXFSZ:
                return done("output_limit", f"file-size limit ({name})")
            return done("killed", f"killed by {name}")
        return done("killed", f"the sandbox harness was killed while the program ran (status {returncode})")


def check_infra_errors(results: Sequence[ExecResult], what: str) -> None:
    """An EvalError when more than `MAX_INFRA_ERROR_SHARE` of `results` are infra errors (`what`: whose)."""
    failed = [r for r in results if r.reason == "infra_error"]
    if len(failed) > MAX_INFRA_ERROR_SHARE * len(results):
        raise EvalError(
            f"{what}: the code sandbox failed to run {len(failed)} of {len(results)} programs (infra_error; at most "
            f"{MAX_INFRA_ERROR_SHARE:.0%} allowed), so pass rates would be wrong; first: {failed[0].detail}"
        )


def _python_candidates() -> list[str]:
    seen, found = set(), []
    options = (sys.executable, getattr(sys, "_base_executable", None), shutil.which("python3"), "/usr/bin/python3")
    for path in options:
        if path and os.path.exists(path) and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            found.append(path)
    return found

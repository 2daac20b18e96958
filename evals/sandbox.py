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

from __future__ import annotations

import itertools
import os
import secrets
import select
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

from evals.errors import EvalError

REASONS = ("passed", "assertion", "exception", "syntax_error", "timeout", "memory", "exit", "killed", "output_limit")
"""passed; assertion (a test failed); exception (any other error); syntax_error
(the program does not compile); timeout (wall-clock or CPU limit); memory
(MemoryError at the memory limit); exit (the program ended before its tests
finished, e.g. sys.exit(0)); killed (a signal, e.g. SIGKILL or SIGSEGV);
output_limit (stdout/stderr reached the file-size limit)."""

UID_BASE = 1_000_000_000  # far above real accounts; each process uses its own block of a million uids
UID_BLOCK = 1_000_000
MAX_WORKERS = 64
DETAIL_CHARS = 2000

# The harness runs inside the sandbox as `python -I -S -c HARNESS <config fd> <result fd>`.
# It forks: the child (the "worker") sets the limits and runs program.py; the
# parent only waits and reports how the worker ended. In a pid namespace the
# parent is pid 1, so its exit takes every leftover process down with it.
HARNESS = r"""
import os, sys


def make_guard(root, network, files):
    realpath, fsdecode, sep, getpid = os.path.realpath, os.fsdecode, os.sep, os.getpid
    root = realpath(root) + sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    network_events = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                      "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"}
    path_events = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                   "shutil.copytree", "shutil.chown"}
    escapes = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "pty.spawn",
               "os.forkpty", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function"}

    def outside(path):
        if isinstance(path, int):
            return False
        try:
            return not (realpath(fsdecode(path)) + sep).startswith(root)
        except Exception:
            return True

    def guard(event, args):
        if event in escapes:
            raise PermissionError(event + " is blocked by the sandbox")
        if network and event in network_events:
            raise PermissionError(event + " is blocked by the sandbox (no network)")
        if not files:
            return
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & write_flags)
            if writing and outside(path):
                raise PermissionError("writing %r is blocked by the sandbox" % (path,))
        elif event in path_events:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes)) or hasattr(arg, "__fspath__"):
                    if outside(arg):
                        raise PermissionError("%s(%r) is blocked by the sandbox" % (event, arg))
        elif event in ("os.kill", "os.killpg") and args[0] not in (0, getpid()):
            raise PermissionError(event + " of another process is blocked by the sandbox")

    return guard


def main():
    import builtins, resource

    config_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(config_fd, "r") as file:  # plain text: json and traceback cost ~10 ms of imports
        nonce, guard_network, guard_files, *rlimits = file.read().split("\n")
    write, exit_now, getpid = os.write, os._exit, os.getpid

    def send(kind, status, detail=""):
        detail = str(detail).replace("\r", " ").replace("\n", " ")[:2000]
        try:
            write(result_fd, ("%s %s %s %s\n" % (nonce, kind, status, detail)).encode("utf-8", "replace"))
        except OSError:
            pass

    def describe(error):
        text = "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__
        if isinstance(error, SyntaxError):
            return text
        line, tb = None, error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "program.py":
                line = tb.tb_lineno
            tb = tb.tb_next
        return text if line is None else "%s (program.py line %s)" % (text, line)

    worker = os.fork()
    if worker:
        while True:
            try:
                _, status = os.waitpid(worker, 0)
                break
            except InterruptedError:
                continue
        if os.WIFSIGNALED(status):
            send("exit", "signal", os.WTERMSIG(status))
        else:
            send("exit", "code", os.WEXITSTATUS(status))
        exit_now(0)

    for rlimit in rlimits:
        name, soft, hard = rlimit.split()
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    sys.stdin.close()
    with open("program.py", encoding="utf-8") as file:
        source = file.read()
    if guard_network == "1" or guard_files == "1":
        sys.addaudithook(make_guard(os.getcwd(), guard_network == "1", guard_files == "1"))
    worker_pid = getpid()
    # Bound now: the program may rebind builtins.AssertionError and friends.
    assertion_error, memory_error, system_exit, base_exception = AssertionError, MemoryError, SystemExit, BaseException
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as error:
        send("result", "syntax_error", describe(error))
        exit_now(0)
    module = type(sys)("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    scope = module.__dict__
    try:
        exec(code, scope)
        sys.stdout.flush()
        sys.stderr.flush()
    except system_exit as error:
        status, detail = "exit", "SystemExit(%r) before the tests finished" % (error.code,)
    except assertion_error as error:
        status, detail = "assertion", describe(error)
    except memory_error:
        scope.clear()
        status, detail = "memory", "MemoryError"
    except base_exception as error:
        status, detail = "exception", describe(error)
    else:
        status, detail = "passed", ""
    if getpid() == worker_pid:  # a fork of the program that fell through to here reports nothing
        send("result", status, detail)
    exit_now(0)


main()
"""


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
        namespaces: use network + pid namespaces (None: where `unshare` works).
        guard: Python audit-hook guard for files (None: when not switching uid).
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
        namespaces: bool | None = None,
        guard: bool | None = None,
        python: str | None = None,
    ) -> None:
        if timeout_s <= 0 or memory_mb <= 0 or file_size_mb <= 0 or max_processes < 2 or max_open_files < 16:
            raise EvalError("sandbox limits must be positive (max_processes >= 2, max_open_files >= 16)")
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.file_size_mb = file_size_mb
        self.max_processes = max_processes
        self.max_open_files = max_open_files
        self.workers = max(1, min(workers or os.cpu_count() or 1, MAX_WORKERS))
        self.namespaces = namespaces
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
            "namespaces": self._use_namespaces,
            "user": "a fresh unprivileged uid per program" if self._switch_user else "the caller's uid",
            "guard": {"network": self._guard_network, "files": self._guard_files},
            "python": self._python,
            "python_version": self._python_version,
        }

    def stray_processes(self) -> list[int]:
        """Pids still running under a sandbox uid (always empty without a uid switch)."""
        if not self._ready or not self._switch_user:
            return []
        return _live_processes(set(self._used_uids))

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
        """Pick the strongest isolation and an interpreter that actually work here."""
        can_unshare = shutil.which("unshare") is not None
        modes = [self.namespaces] if self.namespaces is not None else [True, False]
        modes = [m for m in modes if can_unshare or not m]
        pythons = [self.python] if self.python else _python_candidates()
        failure = "no isolation mode to try (namespaces=true needs the unshare command)"
        for use_namespaces in modes:
            for python in pythons:
                self._use_namespaces, self._python = use_namespaces, python
                self._guard_network = not use_namespaces
                self._guard_files = self.guard if self.guard is not None else not self._switch_user
                result = self._run_program("import sys, math, hashlib, re\nprint(sys.version.split()[0])\n")
                if result.passed:
                    self._python_version = result.output_tail.strip()
                    return
                failure = f"{python} (namespaces={use_namespaces}): {result.reason} {result.detail} {result.output_tail[-300:]}"
        raise EvalError(f"the code sandbox cannot run programs on this machine; last attempt: {failure}")

    # ---- one program -------------------------------------------------------------

    def _run_program(self, program: str) -> ExecResult:
        uid = None
        if self._switch_user:
            uid = next(self._next_uid)
            self._used_uids.add(uid)
        return self._run_one(program, uid)

    def _command(self, uid: int | None, config_fd: int, result_fd: int) -> list[str]:
        prefix: list[str] = []
        if self._use_namespaces:
            prefix = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
            prefix += [f"--setuid={uid}", f"--setgid={uid}"] if uid is not None else ["--user", "--map-root-user"]
            prefix.append("--")
        return prefix + [self._python, "-I", "-S", "-c", HARNESS, str(config_fd), str(result_fd)]

    def _rlimits(self, uid: int | None) -> list[tuple[str, int, int]]:
        cpu = ceil(self.timeout_s) + 1
        nproc = self.max_processes if uid is not None else _count_processes(os.getuid()) + self.max_processes
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
            config = [nonce, str(int(self._guard_network)), str(int(self._guard_files))]
            config += [f"{name} {soft} {hard}" for name, soft, hard in self._rlimits(uid)]
            config_r, config_w = os.pipe()
            os.write(config_w, "\n".join(config).encode())
            os.close(config_w)
            env = {"PATH": "/usr/bin:/bin", "HOME": run_dir, "TMPDIR": run_dir, "LANG": "C.UTF-8"}
            as_user = (
                {"user": uid, "group": uid, "extra_groups": []} if uid is not None and not self._use_namespaces else {}
            )
            with tempfile.TemporaryFile(dir=self._base) as output:
                start = time.monotonic()
                try:
                    proc = subprocess.Popen(
                        self._command(uid, config_r, result_w), cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
                        stdout=output, stderr=subprocess.STDOUT, pass_fds=(config_r, result_w),
                        start_new_session=True, **as_user,
                    )  # fmt: skip
                except OSError as error:  # e.g. the interpreter is not executable by the sandbox uid
                    return ExecResult(False, "killed", f"could not start the sandbox: {error}")
                finally:
                    os.close(config_r)
                    os.close(result_w)
                    result_w = -1
                timed_out = not _wait_unreaped(proc.pid, self.timeout_s)
                if timed_out and self._use_namespaces:
                    # Kill the namespace's init, not unshare: the kernel then kills and
                    # reaps everything inside, and unshare reaps the init.
                    for child in _children(proc.pid):
                        _kill(child)
                    _wait_unreaped(proc.pid, 5.0)
                _kill_group(proc.pid)  # safe: the unreaped leader still holds its pid
                proc.wait()
                if uid is not None and not self._use_namespaces:
                    _kill_uids({uid})
                seconds = time.monotonic() - start
                size = os.fstat(output.fileno()).st_size
                output.seek(max(0, size - DETAIL_CHARS))
                tail = output.read().decode("utf-8", "replace")
            reports = _read_reports(result_r, nonce)
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
        return done("killed", f"the sandbox harness ended without a report (status {returncode})")


# ---- helpers ---------------------------------------------------------------------


def _python_candidates() -> list[str]:
    seen, found = set(), []
    options = (sys.executable, getattr(sys, "_base_executable", None), shutil.which("python3"), "/usr/bin/python3")
    for path in options:
        if path and os.path.exists(path) and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            found.append(path)
    return found


def _read_reports(fd: int, nonce: str) -> dict[str, tuple[str, str]]:
    """The first "result" and "exit" lines carrying the nonce (anything else is ignored)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while len(chunks) < 64:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    reports: dict[str, tuple[str, str]] = {}
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == nonce and parts[1] in ("result", "exit") and parts[1] not in reports:
            reports[parts[1]] = (parts[2], parts[3])
    return reports


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait until `pid` exits, without reaping it; False on timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            return bool(select.select([pidfd], [], [], timeout)[0])
        finally:
            os.close(pidfd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.005)
    return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        return []


def _processes(include_zombies: bool = True) -> list[tuple[int, int]]:
    """(pid, real uid) of the processes in /proc."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as file:
                fields = dict(line.split(":", 1) for line in file if ":" in line)
        except OSError:
            continue
        if include_zombies or not fields.get("State", "").strip().startswith("Z"):
            found.append((int(entry), int(fields["Uid"].split()[0])))
    return found


def _live_processes(uids: set[int]) -> list[int]:
    return [pid for pid, uid in _processes(include_zombies=False) if uid in uids]


def _count_processes(uid: int) -> int:
    return sum(1 for _, owner in _processes() if owner == uid)


def _kill_uids(uids: set[int]) -> None:
    """Kill every live process of sandbox uids (strays that left the process group)."""
    for _ in range(50):
        pids = _live_processes(uids)
        if not pids:
            return
        for pid in pids:
            _kill(pid)
        time.sleep(0.005)

"""The harness: the program that runs inside the sandbox around the model's program, and its side of the protocol.

The sandbox sends the harness its config on one pipe (`config`) and reads its reports, tagged with a nonce, from
another (`read_reports`); the verdict trusts nothing else the program could write. The harness reports "start"
before the program exists: a run without it never reached the program (the sandbox failed, not the program).
"""

from __future__ import annotations

import os

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

    send("start", "ok")

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


REPORTS = ("start", "result", "exit")


def config(nonce: str, guard_network: bool, guard_files: bool, rlimits: list[tuple[str, int, int]]) -> bytes:
    """What the harness reads from its config fd: the nonce, the two guard flags, then one rlimit per line."""
    lines = [nonce, str(int(guard_network)), str(int(guard_files))]
    lines += [f"{name} {soft} {hard}" for name, soft, hard in rlimits]
    return "\n".join(lines).encode()


def read_reports(fd: int, nonce: str) -> dict[str, tuple[str, str]]:
    """The first "start", "result" and "exit" lines carrying the nonce (anything else is ignored)."""
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
        if len(parts) == 4 and parts[0] == nonce and parts[1] in REPORTS and parts[1] not in reports:
            reports[parts[1]] = (parts[2], parts[3])
    return reports

"""The code sandbox: one property per test, each checked by a program that attacks it.

Limits are tight (1.5 s, 256 MB, 4 MB files, 8 processes) so the hostile
programs cannot hurt the machine or the test run.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

from qwen_evals.core.errors import EvalError
from qwen_evals.scoring.sandbox import REASONS, ExecResult, Sandbox, bwrap, check_infra_errors
from qwen_evals.scoring.sandbox.isolation import Bubblewrap
from tests.conftest import REPO, require_bwrap

LIMITS = {"timeout_s": 1.5, "memory_mb": 256, "file_size_mb": 4, "max_processes": 8, "workers": 2}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(**LIMITS)


@pytest.fixture(scope="module")
def fallback() -> Sandbox:
    """No namespaces, audit-hook guard on: the mode of machines that forbid unshare."""
    return Sandbox(**LIMITS, isolation="process", guard=True)


@pytest.fixture(scope="module")
def bwrapped(sandbox) -> Sandbox:
    """The default sandbox, where it uses bubblewrap (skipped elsewhere; required in CI)."""
    require_bwrap(sandbox)
    return sandbox


@pytest.fixture(params=["default", "fallback"])
def any_mode(request, sandbox, fallback) -> Sandbox:
    return sandbox if request.param == "default" else fallback


# ---- how programs end ---------------------------------------------------------------

VERDICTS = {
    "passes": ("assert sum([1, 2]) == 3\n", "passed"),
    "failed_assert": ("assert 1 == 2, 'wrong'\n", "assertion"),
    "name_error": ("undefined_name\n", "exception"),
    "syntax_error": ("def f(:\n", "syntax_error"),
    "sys_exit_0": ("import sys\nsys.exit(0)\nassert False\n", "exit"),
    "os_exit_0": ("import os\nos._exit(0)\n", "exit"),
    "sleeps_forever": ("import time\ntime.sleep(60)\n", "timeout"),
    "allocates_16_gb": ("x = bytearray(1 << 34)\n", "memory"),
    "grows_until_the_limit": ("hog = []\nwhile True:\n    hog.append(bytearray(1 << 22))\n", "memory"),
    "floods_stdout": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", "output_limit"),
    "writes_a_big_file": ("open('big.bin', 'wb').write(b'0' * (8 << 20))\n", "exception"),
    "reads_stdin": ("input()\n", "exception"),
    "kills_itself": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "killed"),
    "rebinds_assertion_error": (
        "import builtins\nbuiltins.AssertionError = type('Harmless', (Exception,), {})\nassert False\n",
        "assertion",
    ),
    "exits_0_at_exit": ("import atexit, os\natexit.register(os._exit, 0)\nassert False\n", "assertion"),
    "forges_a_report": (
        (
            "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'x result passed \"\"\\n')\n"
            "    except OSError:\n        pass\nos._exit(0)\n"
        ),
        "exit",
    ),
}


@pytest.fixture(scope="module")
def verdicts(sandbox):
    names = list(VERDICTS)
    return dict(zip(names, sandbox.run_many([VERDICTS[n][0] for n in names])))


@pytest.mark.parametrize("name", list(VERDICTS))
def test_each_way_of_ending_gets_its_reason(verdicts, name):
    result = verdicts[name]
    expected = VERDICTS[name][1]
    assert result.reason == expected, (result.detail, result.output_tail[-200:])
    assert result.passed == (expected == "passed")
    assert result.reason in REASONS


def test_failures_say_where(verdicts):
    assert verdicts["failed_assert"].detail == "AssertionError: wrong (program.py line 1)"
    assert verdicts["name_error"].detail.startswith("NameError: name 'undefined_name' is not defined")
    assert "1.5 s" in verdicts["sleeps_forever"].detail
    assert verdicts["sleeps_forever"].seconds < 3


# ---- isolation ------------------------------------------------------------------------


def test_each_program_gets_a_fresh_interpreter_dir_and_environment(any_mode, monkeypatch):
    monkeypatch.setenv("EVALS_SECRET", "leaked")
    probe = (
        "import os, sys\n"
        "assert 'EVALS_SECRET' not in os.environ, 'environment leaked'\n"
        "assert sys.flags.isolated and sys.flags.no_site\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
        "open('left_behind.txt', 'w').write('x')\n"
        "print(os.path.abspath('left_behind.txt'))\n"
    )
    first = any_mode.run(probe)
    second = any_mode.run(probe)  # it sees no left_behind.txt
    assert first.passed and second.passed, (first.detail, second.detail)
    assert not os.path.exists(first.output_tail.strip())


def test_process_count_is_limited(sandbox):
    spawner = (
        "import os, time\nstarted = 0\ntry:\n    for _ in range(50):\n        if os.fork() == 0:\n"
        "            time.sleep(5)\n            os._exit(0)\n        started += 1\nexcept OSError:\n    pass\n"
        "print(started)\n"
    )
    result = sandbox.run(spawner)
    assert result.passed, result.detail
    assert int(result.output_tail) < LIMITS["max_processes"]
    assert sandbox.stray_processes() == []  # the sleeping children died with the program


def test_fork_bomb_is_contained_and_cleaned_up(any_mode):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = any_mode.run(bomb)
    assert (result.passed, result.reason) == (False, "timeout")
    assert any_mode.stray_processes() == []
    assert any_mode.run("print('still fine')\n").passed


def test_processes_that_leave_the_group_are_killed(any_mode):
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    assert any_mode.run(daemon).passed
    assert any_mode.stray_processes() == []


def test_no_network(any_mode):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = any_mode.run(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
        )
        server.settimeout(0.1)
        with pytest.raises(TimeoutError):  # a connection would wait in the backlog
            server.accept()
    assert (result.passed, result.reason) == (False, "exception")
    refused = ("Network is unreachable", "Connection refused", "blocked by the sandbox")  # bwrap's loopback is up
    assert any(reason in result.detail for reason in refused), result.detail


def test_callers_files_survive_rm_rf_and_writes(any_mode, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    attacks = [
        f"import os\nassert os.system('rm -rf {victim}') == 0\n",
        f"import shutil\nshutil.rmtree('{victim}')\n",
        f"open('{victim}/pwned.txt', 'w').write('pwned')\n",
        f"import os\nos.remove('{victim}/keep.txt')\n",
    ]
    results = any_mode.run_many(attacks)
    assert [r.passed for r in results] == [False] * 4, [r.detail for r in results]
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "precious"


def test_fallback_guard_blocks_escape_hatches(fallback):
    results = fallback.run_many(
        [
            "import subprocess\nsubprocess.run(['true'])\n",
            "import socket\nsocket.socket()\n",
            "import ctypes\nctypes.CDLL(None)\n",
            "open('/tmp/evals-sandbox-escape.txt', 'w')\n",
        ]
    )
    assert all("blocked by the sandbox" in r.detail for r in results), [r.detail for r in results]
    assert not os.path.exists("/tmp/evals-sandbox-escape.txt")


def test_only_the_result_pipe_is_passed_in(any_mode):
    leaked = os.open(REPO / "README.md", os.O_RDONLY)
    os.set_inheritable(leaked, True)  # inheritable, yet not passed
    try:
        result = any_mode.run(
            "import os\nopen_fds = {}\nfor fd in os.listdir('/proc/self/fd'):\n    try:\n"
            "        open_fds[int(fd)] = os.readlink('/proc/self/fd/' + fd)\n    except OSError:\n        pass\n"
            "print(sorted(target.split(':')[0] for fd, target in open_fds.items() if fd > 2))\n"
        )
    finally:
        os.close(leaked)
    assert result.passed, result.detail
    assert result.output_tail.strip() == "['pipe']"


def test_a_program_cannot_turn_its_failure_into_an_infra_error(any_mode):
    result = any_mode.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos._exit(0)\n")
    assert not result.passed and result.reason in ("exit", "killed", "exception"), (result.reason, result.detail)


# ---- bubblewrap ---------------------------------------------------------------------------


def test_bwrap_shows_only_what_the_interpreter_needs(bwrapped, shared_data):
    absent = [str(REPO), str(REPO / "results"), str(shared_data), "/etc", "/var", "/bin/sh", "/usr/bin/sh"]
    result = bwrapped.run(
        "import os, site\n"
        f"visible = [p for p in {absent!r} if os.path.exists(p)]\n"
        "assert not visible, visible\n"
        "packages = [os.listdir(p) for p in site.getsitepackages() if os.path.isdir(p)]\n"
        "assert not any(packages), packages\n"
        "written = []\n"
        "for path in ['/x', '/usr/lib/x', '/dev/x', site.getsitepackages()[0] + '/x', '/tmp/program.py']:\n"
        "    try:\n        open(path, 'w')\n        written.append(path)\n    except OSError:\n        pass\n"
        "assert not written, written\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    assert result.passed, (result.detail, result.output_tail)
    assert result.output_tail.strip() == "[1, 2]"  # the harness (pid 1) and the program: no host process


def test_bwrap_refuses_new_user_namespaces(bwrapped):
    result = bwrapped.run(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nCLONE_NEWUSER = 0x10000000\n"
        "assert libc.unshare(CLONE_NEWUSER) == 0, ctypes.get_errno()\n"
    )
    assert result.reason == "assertion", result.detail


def test_an_older_bwrap_without_the_optional_options_still_isolates(monkeypatch, shared_data):
    monkeypatch.setattr(bwrap, "missing_options", lambda: bwrap.OPTIONAL)  # e.g. Ubuntu 22.04's bwrap 0.6
    sandbox = Sandbox(**LIMITS)
    require_bwrap(sandbox)
    assert sandbox.describe()["bwrap_missing_options"] == ["--disable-userns", "--size"]
    result = sandbox.run(f"import os\nassert not os.path.exists({str(shared_data)!r})\nprint(os.listdir('/tmp'))\n")
    assert result.passed and result.output_tail.strip() == "['program.py']", result.detail


def test_without_bwrap_the_fallback_is_recorded_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(Bubblewrap, "available", lambda self: False)
    with caplog.at_level(logging.WARNING, logger="qwen_evals.scoring.sandbox.sandbox"):
        info = Sandbox(**LIMITS).describe()
    assert info["isolation"] in ("unshare", "process")
    assert info["isolation_fallback"].startswith("bwrap: needs bubblewrap")
    assert "weaker isolation" in caplog.text and "bwrap: needs bubblewrap" in caplog.text


def test_bwrap_that_cannot_start_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(Bubblewrap, "available", lambda self: True)
    monkeypatch.setattr(Bubblewrap, "command", lambda self, *args: ["bwrap", "--unshare-all", "--no-such-option"])
    with caplog.at_level(logging.WARNING, logger="qwen_evals.scoring.sandbox.sandbox"):
        info = Sandbox(**LIMITS).describe()
    assert info["isolation"] != "bwrap" and "infra_error" in info["isolation_fallback"]
    assert "weaker isolation" in caplog.text


# ---- infrastructure errors ---------------------------------------------------------------


def test_a_sandbox_that_fails_to_start_a_program_is_an_infra_error(monkeypatch):
    sandbox = Sandbox(**LIMITS)
    sandbox.describe()  # probed: the isolation is chosen
    mode = type(sandbox._isolation)
    monkeypatch.setattr(mode, "command", lambda self, *args: ["false"])
    ended = sandbox.run("assert False\n")
    monkeypatch.setattr(mode, "command", lambda self, *args: ["/nonexistent/python3"])
    unstarted = sandbox.run("assert False\n")
    assert (ended.reason, unstarted.reason) == ("infra_error", "infra_error")
    assert "before the program started" in ended.detail and "could not start the sandbox" in unstarted.detail


def test_more_than_one_percent_of_infra_errors_fail_the_batch():
    def batch(failed: int) -> list[ExecResult]:
        return [ExecResult(False, "infra_error", "bwrap: out of namespaces")] * failed + [
            ExecResult(True, "passed")
        ] * (200 - failed)

    check_infra_errors(batch(2), "humaneval")  # 1%
    with pytest.raises(EvalError, match=r"humaneval: the code sandbox failed to run 3 of 200 programs .*out of namesp"):
        check_infra_errors(batch(3), "humaneval")


# ---- throughput and setup --------------------------------------------------------------


def test_programs_run_in_parallel(sandbox):
    start = time.monotonic()
    results = sandbox.run_many(["import time\ntime.sleep(0.6)\n"] * 4)
    elapsed = time.monotonic() - start
    assert all(r.passed for r in results)
    assert elapsed < 4 * 0.6 * 0.8  # two workers: about half the serial time


def test_describe_says_what_isolation_is_in_use(sandbox):
    info = sandbox.describe()
    assert info["timeout_s"] == 1.5 and info["workers"] == 2
    assert info["isolation"] in ("bwrap", "unshare", "process") and info["python_version"].startswith("3.")
    if os.geteuid() == 0:
        assert info["user"] == "a fresh unprivileged uid per program"


def test_an_unusable_interpreter_is_a_clear_error():
    with pytest.raises(EvalError, match="the code sandbox cannot run programs on this machine"):
        Sandbox(python="/nonexistent/python3").run("pass\n")


def test_bad_limits_are_rejected():
    with pytest.raises(EvalError, match="sandbox limits"):
        Sandbox(timeout_s=0)

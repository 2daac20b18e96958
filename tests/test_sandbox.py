"""The code sandbox: one property per test, each checked by a program that attacks it.

Limits are tight (1.5 s, 256 MB, 4 MB files, 8 processes) so the hostile
programs cannot hurt the machine or the test run.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from qwen_evals.core.errors import EvalError
from qwen_evals.scoring.sandbox import REASONS, Sandbox

LIMITS = {"timeout_s": 1.5, "memory_mb": 256, "file_size_mb": 4, "max_processes": 8, "workers": 2}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(**LIMITS)


@pytest.fixture(scope="module")
def fallback() -> Sandbox:
    """No namespaces, audit-hook guard on: the mode of machines that forbid unshare."""
    return Sandbox(**LIMITS, namespaces=False, guard=True)


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


def test_each_program_gets_a_fresh_interpreter_dir_and_environment(sandbox, monkeypatch):
    monkeypatch.setenv("EVALS_SECRET", "leaked")
    probe = (
        "import os, sys\n"
        "assert 'EVALS_SECRET' not in os.environ, 'environment leaked'\n"
        "assert sys.flags.isolated and sys.flags.no_site\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
        "open('left_behind.txt', 'w').write('x')\n"
        "print(os.getcwd())\n"
    )
    first, second = sandbox.run_many([probe, probe])
    assert first.passed and second.passed, (first.detail, second.detail)
    assert first.output_tail != second.output_tail
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
    assert "Network is unreachable" in result.detail or "blocked by the sandbox" in result.detail


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
    assert isinstance(info["namespaces"], bool) and info["python_version"].startswith("3.")
    if os.geteuid() == 0:
        assert info["user"] == "a fresh unprivileged uid per program"


def test_an_unusable_interpreter_is_a_clear_error():
    with pytest.raises(EvalError, match="the code sandbox cannot run programs on this machine"):
        Sandbox(python="/nonexistent/python3").run("pass\n")


def test_bad_limits_are_rejected():
    with pytest.raises(EvalError, match="sandbox limits"):
        Sandbox(timeout_s=0)

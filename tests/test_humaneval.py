"""HumanEval on the real data: canonical solutions pass, extraction, pass@k, hostile completions, bad input."""

from __future__ import annotations

import gzip
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from qwen_evals.backends.fake import FakeBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.metrics import measure_all
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import Decoding, Generate
from qwen_evals.scoring.pass_at_k import pass_at_k
from qwen_evals.scoring.sandbox import ExecResult, Sandbox
from qwen_evals.tasks.humaneval import HumanEval, cut_base_completion, extract_chat_completion
from tests.conftest import REPO, require_bwrap

TIGHT = {"timeout_s": 1.5, "memory_mb": 256, "file_size_mb": 4, "max_processes": 8, "workers": 2}


@pytest.fixture(scope="module")
def humaneval_dir(shared_data) -> Path:
    return shared_data / "humaneval"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(**TIGHT)


def make(humaneval_dir, protocol="chat_0shot", **kwargs) -> HumanEval:
    kwargs.setdefault("sandbox", Sandbox(**{**TIGHT, "timeout_s": 3.0}))
    return HumanEval(protocol, data_dir=str(humaneval_dir), allow_code_execution=True, **kwargs)


# ---- the 164 canonical solutions ------------------------------------------------------


def test_all_164_canonical_solutions_pass_in_one_parallel_batch(humaneval_dir):
    task = make(humaneval_dir, "chat_0shot")
    samples = task.load()
    assert len(samples) == 164
    rows = task.score_all(samples, [[request.reference for request in task.requests(s)] for s in samples])
    assert [r["result"] for r in rows] == ["passed"] * 164
    assert {r["parse_rule"] for r in rows} == {"fenced_entry_point"}
    metrics, _ = measure_all(task.metrics(), pd.DataFrame(rows))
    assert metrics["pass@1"] == metrics["accuracy"] == 1.0 and metrics["unparsed_rate"] == 0.0
    assert task.summarize(pd.DataFrame(rows), metrics)["results"] == {"passed": 164}


def test_base_cut_keeps_every_canonical_solution_whole(humaneval_dir):
    problems = make(humaneval_dir, "base_0shot").read_problems()
    assert all(cut_base_completion(p.canonical_solution).answer == p.canonical_solution.rstrip() for p in problems)


@pytest.mark.parametrize("protocol", HumanEval.protocols)
def test_the_oracle_passes_end_to_end_through_the_runner(humaneval_dir, protocol):
    report = evaluate(make(humaneval_dir, protocol), FakeBackend(policy="oracle"), limit=8)
    assert len(report.records) == 8
    assert report.summary["metrics"]["pass@1"] == 1.0 and report.summary["results"] == {"passed": 8}


def test_empty_and_wrong_completions_fail(humaneval_dir):
    task = make(humaneval_dir, "base_0shot")
    empty = evaluate(task, FakeBackend(policy="worst"), limit=5)
    assert empty.summary["metrics"]["pass@1"] == 0.0
    assert empty.summary["metrics"]["unparsed_rate"] == 1.0
    wrong = evaluate(task, FakeBackend(policy="script", script=lambda r: "    return None\n"), limit=5)
    assert wrong.summary["metrics"]["pass@1"] == 0.0
    assert set(wrong.records["result"]) <= {"assertion", "exception"}
    broken = evaluate(task, FakeBackend(policy="script", script=lambda r: "    return (\n"), limit=2)
    assert set(broken.records["result"]) == {"syntax_error"}


# ---- hostile completions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def owned(tmp_path_factory) -> dict[str, Path]:
    """A directory and a file location the test owns, which the completions attack."""
    root = tmp_path_factory.mktemp("owned")
    victim = root / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    return {"victim": victim, "outside": root / "outside"}


def chat_reply(body: str, top_level: str = "") -> str:
    """A chat reply with a fenced solution of HumanEval/0 (all of it ends up in the program)."""
    return f"Sure!\n```python\ndef has_close_elements(numbers, threshold):\n{body}\n{top_level}\n```\n"


def hostile_replies(owned: dict[str, Path], port: int) -> dict[str, tuple[str, str]]:
    """name -> (chat reply, expected failure reason)."""
    return {
        "infinite_loop": (chat_reply("    while True:\n        pass"), "timeout"),
        "fork_bomb": (
            chat_reply(
                "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass"
            ),
            "timeout",
        ),
        "memory_bomb": (chat_reply("    hog = []\n    while True:\n        hog.append(bytearray(1 << 24))"), "memory"),
        "rm_rf_owned_dir": (
            chat_reply(f"    import os\n    os.system('rm -rf {owned['victim']}')\n    return None"),
            "assertion",  # rm is denied by permissions (root: the program runs as another uid) ...
        ),
        "write_outside_temp_dir": (
            chat_reply(f"    open('{owned['outside']}', 'w').write('pwned')\n    return None"),
            "exception",
        ),
        "open_socket": (
            chat_reply(
                f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    return False"
            ),
            "exception",
        ),
        "sys_exit_before_tests": (chat_reply("    return False", "import sys\nsys.exit(0)"), "exit"),
        "os_exit_before_tests": (chat_reply("    return False", "import os\nos._exit(0)"), "exit"),
        "redefine_check": (
            chat_reply(
                "    return None", "def check(candidate):\n    return True\nimport builtins\nbuiltins.check = check"
            ),
            "assertion",
        ),
        "patch_assert": (
            chat_reply(
                "    return None",
                "import builtins, atexit, os, sys\nbuiltins.AssertionError = type('Harmless', (Exception,), {})\n"
                "sys.excepthook = lambda *args: None\natexit.register(os._exit, 0)",
            ),
            "assertion",
        ),
        "huge_stdout": (
            chat_reply("    import sys\n    while True:\n        sys.stdout.write('x' * 65536)"),
            "output_limit",
        ),
    }


@pytest.fixture(scope="module")
def hostile(humaneval_dir, owned, sandbox):
    """Every hostile reply scored in one parallel batch, with a listener the socket one aims at."""
    task = HumanEval("chat_0shot", data_dir=str(humaneval_dir), allow_code_execution=True, sandbox=sandbox)
    [sample] = task.load(limit=1)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        cases = hostile_replies(owned, server.getsockname()[1])
        rows = task.score_all([sample] * len(cases), [[reply] for reply, _ in cases.values()])
        server.settimeout(0.1)
        try:
            server.accept()[0].close()
            connected = True
        except TimeoutError:
            connected = False
    return {"rows": dict(zip(cases, rows)), "expected": {k: v[1] for k, v in cases.items()}, "connected": connected}


@pytest.mark.parametrize("name", list(hostile_replies({"victim": Path("v"), "outside": Path("o")}, 0)))
def test_hostile_completion_is_contained_and_fails_with_its_reason(hostile, name):
    row = hostile["rows"][name]
    assert row["passed"] is False and row["correct"] == 0.0
    expected = hostile["expected"][name]
    if name == "rm_rf_owned_dir" and os.geteuid() != 0:
        expected = "exception"  # ... or refused by the audit hook (os.system) when it runs as the caller
    assert row["result"] == expected, row["result_detail"]
    assert row["parse_status"] == "strict"


def test_hostile_completions_left_the_machine_as_it_was(hostile, owned, sandbox):
    assert sorted(p.name for p in owned["victim"].iterdir()) == ["keep.txt"]
    assert (owned["victim"] / "keep.txt").read_text() == "precious"
    assert not owned["outside"].exists()
    assert hostile["connected"] is False
    assert sandbox.stray_processes() == []
    assert sandbox.run("print('still fine')\n").passed


# ---- escapes that only a filesystem boundary (bubblewrap) stops ----------------------------


@pytest.fixture(scope="module")
def host(humaneval_dir):
    """What the escapes aim at: the data file, a Unix-socket listener in /tmp, a marked host process, file names."""
    folder = Path(tempfile.mkdtemp(prefix="evals-escape-", dir="/tmp"))
    folder.chmod(0o755)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "listener.sock"))
    (folder / "listener.sock").chmod(0o777)  # any uid may connect
    listener.listen()
    marker = f"evals-marker-{secrets.token_hex(8)}"
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    name = f"evals-escape-{secrets.token_hex(8)}"
    yield {
        "data_file": humaneval_dir / "HumanEval.jsonl.gz",
        "socket": folder / "listener.sock",
        "listener": listener,
        "marker": marker,
        "files": [Path(d) / name for d in ("/tmp", "/dev/shm", "/var/tmp")],
    }
    marked.kill()
    marked.wait()
    listener.close()
    for path in [folder / "listener.sock", *[Path(d) / name for d in ("/tmp", "/dev/shm", "/var/tmp")]]:
        path.unlink(missing_ok=True)
    folder.rmdir()


def escape_replies(host: dict) -> dict[str, str]:
    """name -> chat reply: each was seen getting out of the sandbox without bubblewrap."""
    return {
        "reads_the_canonical_solution": chat_reply(
            f"    import gzip, json\n    for line in gzip.open({str(host['data_file'])!r}, 'rt'):\n"
            "        row = json.loads(line)\n        if row['task_id'] == 'HumanEval/0':\n            scope = {}\n"
            "            exec(row['prompt'] + row['canonical_solution'], scope)\n"
            "            return scope['has_close_elements'](numbers, threshold)"
        ),
        "connects_to_a_unix_socket_in_tmp": chat_reply(
            f"    import socket\n    client = socket.socket(socket.AF_UNIX)\n    client.connect({str(host['socket'])!r})\n"
            "    client.sendall(b'leak')\n    return None"
        ),
        "lists_host_processes": chat_reply(
            "    import os\n    seen = 0\n    for pid in os.listdir('/proc'):\n        try:\n"
            f"            seen += {host['marker'].encode()!r} in open('/proc/' + pid + '/cmdline', 'rb').read()\n"
            "        except OSError:\n            pass\n    raise RuntimeError('host processes seen: %d' % seen)"
        ),
        "leaves_files_in_tmp_shm_and_var_tmp": chat_reply(
            f"    for path in {[str(p) for p in host['files']]!r}:\n        try:\n"
            "            open(path, 'w').write('left behind')\n        except OSError:\n            pass\n    return None"
        ),
    }


@pytest.fixture(scope="module")
def escapes(humaneval_dir, host, sandbox):
    """Every escape scored in one normal HumanEval batch, under bubblewrap; whether the listener got a connection."""
    require_bwrap(sandbox)
    task = HumanEval("chat_0shot", data_dir=str(humaneval_dir), allow_code_execution=True, sandbox=sandbox)
    [sample] = task.load(limit=1)
    cases = escape_replies(host)
    rows = task.score_all([sample] * len(cases), [[reply] for reply in cases.values()])
    host["listener"].settimeout(0.1)
    try:
        host["listener"].accept()[0].close()
        connected = True
    except TimeoutError:
        connected = False
    return {**dict(zip(cases, rows)), "connected": connected}


def test_escape_reading_the_canonical_solution_fails(escapes):
    row = escapes["reads_the_canonical_solution"]
    assert (row["passed"], row["result"]) == (False, "exception")
    assert "No such file or directory" in row["result_detail"]


def test_escape_to_a_unix_socket_in_tmp_fails(escapes):
    row = escapes["connects_to_a_unix_socket_in_tmp"]
    assert escapes["connected"] is False
    assert (row["result"], row["result_detail"].split(":")[0]) == ("exception", "FileNotFoundError")


def test_escape_listing_host_processes_sees_none(escapes):
    row = escapes["lists_host_processes"]
    assert row["result"] == "exception"
    assert row["result_detail"].startswith("RuntimeError: host processes seen: 0 ")


def test_escape_leaving_files_in_tmp_leaves_none(escapes, host):
    assert escapes["leaves_files_in_tmp_shm_and_var_tmp"]["result"] == "assertion"
    assert [str(path) for path in host["files"] if path.exists()] == []


# ---- infrastructure errors -------------------------------------------------------------------


class FlakySandbox(Sandbox):
    """Runs programs for real, except that the first `failures` come back as the sandbox's own failure."""

    def __init__(self, failures: int) -> None:
        super().__init__(**TIGHT)
        self.failures = failures

    def run_many(self, programs):
        ran = super().run_many(programs)
        lost = ExecResult(False, "infra_error", "the sandbox ended with status 1 before the program started")
        return [lost] * self.failures + ran[self.failures :]


def test_infra_errors_are_counted_apart_not_as_failures(humaneval_dir):
    task = make(humaneval_dir, "base_0shot", sandbox=FlakySandbox(failures=1))
    report = evaluate(task, FakeBackend(policy="oracle"), limit=100)
    assert report.summary["results"] == {"passed": 99, "infra_error": 1}
    assert report.summary["metrics"]["pass@1"] == report.summary["metrics"]["accuracy"] == 1.0
    first = report.records.iloc[0]
    assert (first["result"], first["infra_errors"]) == ("infra_error", 1) and pd.isna(first["correct"])


def test_more_than_one_percent_of_infra_errors_fail_the_run(humaneval_dir):
    task = make(humaneval_dir, "base_0shot", sandbox=FlakySandbox(failures=2))
    with pytest.raises(EvalError, match=r"humaneval: the code sandbox failed to run 2 of 100 programs"):
        evaluate(task, FakeBackend(policy="oracle"), limit=100)


# ---- completion extraction ----------------------------------------------------------------

CHAT_CASES = [
    ("Here:\n```python\ndef f(x):\n    return x + 1\n```\nDone.", "    return x + 1", "strict", "fenced_entry_point"),
    (
        "```\nimport math\n\ndef helper():\n    pass\n\ndef f(x):\n    return helper()\n```",
        "    return helper()",
        "strict",
        "fenced_entry_point",
    ),
    (
        "```python\nprint(1)\n```\nthen\n```python\ndef f(x):\n    return 2\n```",
        "    return 2",
        "strict",
        "fenced_entry_point",
    ),
    ("```python\ndef f(\n    x: int,\n) -> int:\n    return x\n```", "    return x", "strict", "fenced_entry_point"),
    ("def f(x):\n    y = x\n\n    return y\nprint(f(1))", "    y = x\n\n    return y", "strict", "entry_point"),
    ("```python\ndef f(x):\n    return x", "    return x", "strict", "entry_point"),  # cut off before the fence closed
    ("def g(x):\n    return 3\n", "    return 3", "fallback", "any_def"),
    ("def f_other(x):\n    return 0\n", "    return 0", "fallback", "any_def"),  # a longer name is not the entry point
    ("return x + 1", "    return x + 1", "fallback", "whole_reply"),
    ("", "", "unparsed", "none"),
]


@pytest.mark.parametrize("reply, code, status, rule", CHAT_CASES)
def test_chat_extraction_follows_qwens_order(reply, code, status, rule):
    found = extract_chat_completion(reply, "f")
    assert (found.answer, found.status, found.rule) == (code, status, rule)


@pytest.mark.parametrize(
    "completion, code, rule",
    [
        ("    return x\n\ndef other():\n    pass\n", "    return x", "cut_at_top_level"),
        ("    a = 1\n\n    return a\n", "    a = 1\n\n    return a", "completion"),
        ("    return x\nprint(f(2))", "    return x", "cut_at_top_level"),
        ("", "", "none"),
        ("print(1)\n", "", "none"),
    ],
)
def test_base_completion_is_cut_at_the_next_top_level_statement(completion, code, rule):
    found = cut_base_completion(completion)
    assert (found.answer, found.rule) == (code, rule)
    assert found.status == ("unparsed" if not code else "strict")


def test_prompts_follow_the_protocols(humaneval_dir):
    chat, base = make(humaneval_dir, "chat_0shot"), make(humaneval_dir, "base_0shot")
    [sample] = chat.load(limit=1)
    [chat_request], [base_request] = chat.requests(sample), base.requests(sample)
    problem = sample.metadata["problem"]
    assert chat_request.prompt == [{"role": "user", "content": "Help me fill the following code.\n" + problem.prompt}]
    assert chat_request.stop == () and chat_request.decoding.greedy
    assert base_request.prompt == problem.prompt and "\ndef " in base_request.stop


def test_the_humanevalpack_protocol_restates_signature_and_docstring(humaneval_dir):
    """Qwen's evaluate_chat_humaneval.py since v1.1: its prompt, checked against hand-written expectations."""
    task = make(humaneval_dir, "chat_0shot_humanevalpack")
    samples = {s.id: s for s in task.load()}
    [first] = task.requests(samples["HumanEval/0"])
    problem = samples["HumanEval/0"].metadata["problem"]
    assert first.prompt == [{"role": "user", "content": (
        "Write a Python function `has_close_elements(numbers: List[float], threshold: float) -> bool` to solve the "
        "following problem:\nCheck if in given list of numbers, are any two numbers closer to each other than\n"
        "given threshold.\n>>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse\n"
        ">>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nTrue\n\n" + problem.prompt
    )}]  # fmt: skip
    assert first.decoding.greedy and first.stop == ()
    # The first docstring of the prompt, as Qwen's regex finds it: for HumanEval/64 the module's FIX note.
    [fix] = task.requests(samples["HumanEval/64"])
    assert fix.prompt[0]["content"].startswith("Write a Python function `vowels_count(s)` to solve the following "
                                               "problem:\n\nAdd more test cases.\n\n\nFIX = ")  # fmt: skip
    # Every problem gets a prompt, and the oracle's replies pass under it, read as chat_0shot reads them.
    rows = task.score_all(list(samples.values()), [[r.reference for r in task.requests(s)] for s in samples.values()])
    assert [r["result"] for r in rows] == ["passed"] * 164
    assert task.describe()["protocol"] == "chat_0shot_humanevalpack"


def test_a_prompt_without_a_docstring_cannot_be_restated(humaneval_dir):
    from qwen_evals.core.types import Sample
    from qwen_evals.tasks.humaneval import Problem

    task = make(humaneval_dir, "chat_0shot_humanevalpack")
    problem = Problem("HumanEval/x", "def f(x):\n    pass\n", "    return x\n", "def check(f): pass", "f")
    with pytest.raises(EvalError, match="HumanEval/x: the prompt has no docstring"):
        task.requests(Sample("HumanEval/x", problem.test, {"problem": problem}))


# ---- pass@k -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k", [(n, c, k) for n in (1, 5, 20) for c in range(0, n + 1, max(1, n // 4)) for k in (1, 2, 5, 10) if k <= n]
)
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(200, 0, 100) == 0.0 and pass_at_k(200, 101, 100) == 1.0
    assert 0.0 < pass_at_k(200, 1, 1) == pytest.approx(1 / 200)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_n_samples_at_temperature_give_pass_at_k(humaneval_dir):
    task = make(humaneval_dir, "base_0shot", n_samples=4, temperature=0.8, pass_at_k=[1, 2, 10])
    [sample] = task.load(limit=1)
    requests = task.requests(sample)
    assert len(requests) == 4 and {r.decoding for r in requests} == {Decoding(temperature=0.8)}
    calls = []

    def half_right(request: Generate) -> str:  # right, wrong, right, wrong, ...
        calls.append(request)
        return request.reference if len(calls) % 2 else "    return None\n"

    report = evaluate(task, FakeBackend(policy="script", script=half_right), limit=3)
    metrics = report.summary["metrics"]
    assert metrics["pass@1"] == pytest.approx(0.5)
    assert metrics["pass@2"] == pytest.approx(1 - math.comb(2, 2) / math.comb(4, 2))
    assert "pass@10" not in metrics
    row = report.records.iloc[0]
    assert row["n_samples"] == 4 and row["n_correct"] == 2 and row["passed"] == [True, False, True, False]
    assert report.summary["results"]["passed"] == 6


# ---- options and bad input ----------------------------------------------------------------


def test_code_execution_must_be_allowed_explicitly(humaneval_dir):
    with pytest.raises(EvalError, match="task.allow_code_execution=true"):
        HumanEval("chat_0shot", data_dir=str(humaneval_dir))
    with pytest.raises(EvalError, match="needs task.temperature > 0"):
        make(humaneval_dir, n_samples=5)


@pytest.fixture
def humaneval_copy(humaneval_dir, tmp_path) -> Path:
    root = tmp_path / "humaneval"
    root.mkdir()
    with gzip.open(humaneval_dir / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as source:
        (root / "HumanEval.jsonl").write_text(source.read(), encoding="utf-8")
    return root


def _edit_line(path: Path, number: int, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("".join(lines), encoding="utf-8")


def _drop(field: str):
    return lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != field}) + "\n"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda line: line[:50] + "\n", r"HumanEval.jsonl: line 5 is not valid JSON"),
        (_drop("entry_point"), r"HumanEval.jsonl: line 5 \(HumanEval/4\) has no 'entry_point'"),
        (_drop("test"), r"HumanEval.jsonl: line 5 \(HumanEval/4\) has no 'test'"),
        (
            lambda line: line.replace('"entry_point": "mean_absolute_deviation"', '"entry_point": "median"'),
            r"HumanEval.jsonl: line 5 \(HumanEval/4\): the prompt does not define `def median\(`",
        ),
    ],
    ids=["malformed-json", "no-entry-point", "no-test", "entry-point-not-in-prompt"],
)
def test_bad_problems_name_file_and_line(humaneval_copy, edit, message):
    _edit_line(humaneval_copy / "HumanEval.jsonl", 5, edit)
    with pytest.raises(EvalError, match=message):
        make(humaneval_copy).load()


def test_a_truncated_gzip_file_names_file_and_byte(humaneval_dir, tmp_path):
    data = (humaneval_dir / "HumanEval.jsonl.gz").read_bytes()
    (tmp_path / "HumanEval.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EvalError, match=rf"HumanEval.jsonl.gz: the gzip data ends early, at byte {len(data) // 2} "):
        make(tmp_path).load()


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(EvalError, match=r"Missing data file: .*HumanEval.jsonl.gz"):
        make(tmp_path).load()


# ---- a real model ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol, tokens", [("chat_0shot", 48), ("base_0shot", 24)])
def test_smollm2_on_two_problems(smollm2, humaneval_dir, protocol, tokens):
    report = evaluate(make(humaneval_dir, protocol, max_new_tokens=tokens), smollm2, limit=2)
    records = report.records
    assert len(records) == 2 and records["output"].map(type).eq(str).all()
    if protocol == "chat_0shot":  # a base completion may stop at once (e.g. at a top-level line)
        assert records["output"].str.len().gt(0).all()
    assert set(records["result"]) <= {"passed", "assertion", "exception", "syntax_error", "timeout", "exit"}
    assert records["result_detail"].map(type).eq(str).all()
    assert 0.0 <= report.summary["metrics"]["pass@1"] <= 1.0


# ---- the command line ----------------------------------------------------------------------


def run_eval(*overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "run_eval.py", "model=fake", "task=humaneval", "resume=false", "canary=0", *overrides]
    return subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_command_line_run_warns_and_records_the_sandbox(shared_data, tmp_path):
    done = run_eval(f"data_dir={shared_data}", "limit=3", f"output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if "allow_code_execution" in line]
    assert len(warnings) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["pass@1"] == 1.0 and summary["results"] == {"passed": 3}
    assert {"isolation", "user", "python_version", "timeout_s"} <= set(summary["sandbox"])
    sample = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert {"output", "completion", "parse_status", "parse_rule", "passed", "result", "result_detail"} <= set(sample)


def test_command_line_refuses_to_run_code_unless_allowed(shared_data, tmp_path):
    done = run_eval("task.allow_code_execution=false", f"data_dir={shared_data}", f"output_dir={tmp_path}")
    assert done.returncode == 2
    assert "task.allow_code_execution=true" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "summary.json").exists()

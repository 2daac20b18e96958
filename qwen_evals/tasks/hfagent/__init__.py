"""HuggingFace Agent benchmark, run mode (transformers 4.31.0 `tools/evaluate_agent.py`): 27 task
phrasings of 11 problems; the agent explains which tools it will use and writes a short program.

Protocol: ../shared/docs/protocols.md, "HuggingFace Agent benchmark" (QwenLM/Qwen
eval/evaluate_plugin.py --eval-hfagent, which calls transformers 4.31.0's `evaluate_agent`).
Card numbers (Qwen-7B-Chat): tool selection 90.74, tool used 92.59, code 74.07.

- Prompt: `run_prompt_template.txt` with `<<all_tools>>` replaced by one line
  `- {name}: {description}` per tool of the default toolbox (14 tools, 4.31's order) and
  `<<prompt>>` by the phrasing; sent as one user turn of the model's chat format, greedy,
  generation stopped at `Task:` (`task.stop`). As Qwen's agent did, `Human:` / `Assistant:`
  become `_HUMAN_:` / `_ASSISTANT_:` in the prompt and back in the reply
  (`task.qwen_reserved_words`; the run template contains neither word). A trailing stop
  string is removed.
- Parsing: the reply is prefixed with `I will use the following ` and split at `Answer:`:
  before is the explanation, after is the code, with a leading ```` ``` ````/```` ```py ````/
  ```` ```python ```` line and a trailing ```` ``` ```` line removed.
- Scores per phrasing, each in [0, 1], reported as fractions (the card prints 100 x mean):
  - `tool_selection`: tool names written in backticks in the explanation against the expected
    set; 1 if equal, else max(0, 1 - 0.25 x missing - 0.25 x unexpected);
  - `tool_used`: the same with the tool names that appear anywhere in the code;
  - `code`: the agent's program and the reference program(s) run in
    `qwen_evals.scoring.restricted_python` (an `ast` interpreter, never `exec`) with fake tools that
    return fixed English sentences embedding their arguments (the image tools raise unless
    their image argument contains "image", the transcriber unless its audio contains
    "sound"); inputs are bound to `<<name>>` (or the problem's literal values). 1.0 if the
    agent's result equals a reference result, 0.75 if it is a dict holding one among its
    values, else 0.3, also when the code failed.
  The expected tool set is the tool names in the reference program; with alternatives, the
  one whose result the agent reproduced (4.31's `get_theoretical_tools`), else the first.
- Data: `data_dir` with `evaluation_tasks.json` (run mode; ../shared/data/hfagent), or the
  transformers 4.31.0 wheel (`task.wheel=`), whose `EVALUATION_TASKS` literals are read with
  `ast` without running anything. The run template comes from `data_dir` when there, else
  from the hub dataset huggingface-tools/default-prompts, where 4.31 downloaded it from
  (`task.template_revision`; the wheel has no copy).
  Tool descriptions: tasks/data/hfagent/tools.json: 10 read from the 4.31.0 wheel; the 4 that
  4.31 fetched from Hub Spaces (image_transformer, text_downloader, image_generator,
  video_generator) are not staged and were **written for this project**.

Known deviations: 4.31 crashed the whole run on a reply without `Answer:` or with two; here
that reply scores as an explanation with empty code (`parse_status` = `no_answer`), or is
split at the first `Answer:`. Qwen's agent did not pass `Task:` to generation but only cut a
trailing one; generation here stops at it. The interpreter's differences from 4.31's are
listed in qwen_evals/scoring/restricted_python (unknown names are refused instead of fuzzily matched,
and a few more constructs are supported).
"""

from qwen_evals.tasks.hfagent.replies import AgentReply, code_score, oracle_reply, parse_reply, set_score
from qwen_evals.tasks.hfagent.source import PACKAGE_DATA, Problem, parse_problems, read_tool_descriptions, read_wheel
from qwen_evals.tasks.hfagent.task import HFAgent
from qwen_evals.tasks.hfagent.tools import FAKE_TOOLS, run_program, tools_in_code, tools_in_explanation

__all__ = [
    "FAKE_TOOLS",
    "PACKAGE_DATA",
    "AgentReply",
    "HFAgent",
    "Problem",
    "code_score",
    "oracle_reply",
    "parse_problems",
    "parse_reply",
    "read_tool_descriptions",
    "read_wheel",
    "run_program",
    "set_score",
    "tools_in_code",
    "tools_in_explanation",
]

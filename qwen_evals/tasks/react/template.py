"""Tools and Qwen's ReAct prompt template (QwenLM/Qwen examples/react_prompt.md, as protocols.md describes it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qwen_evals.core.errors import EvalError

# Qwen's ReAct template (QwenLM/Qwen examples/react_prompt.md), as protocols.md describes it.
TOOL_DESC = (
    "{name_for_model}: Call this tool to interact with the {name_for_human} API. What is the "
    "{name_for_human} API useful for? {description_for_model} Parameters: {parameters} Format the "
    "arguments as a JSON object."
)
REACT_PROMPT = """Answer the following questions as best you can. You have access to the following tools:

{tool_descs}

Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tool_names}]
Action Input: the input to the action
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can be repeated zero or more times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question

Begin!

Question: {query}"""

SCHEMA_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


@dataclass(frozen=True)
class Tool:
    name_for_model: str
    name_for_human: str
    description_for_model: str
    parameters: dict[str, Any]
    """A JSON schema of type object (properties, required)."""


def parse_tool(raw: Any, where: str) -> Tool:
    """A tool definition; the JSON schema is checked enough for arguments to be validated."""
    if not isinstance(raw, dict):
        raise EvalError(f"{where}: a tool must be an object, got {type(raw).__name__}")
    for key in ("name_for_model", "name_for_human", "description_for_model"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise EvalError(f"{where}: tool {raw.get('name_for_model', '?')!r} has no {key!r} text")
    name = raw["name_for_model"]
    schema = raw.get("parameters")
    if not (isinstance(schema, dict) and schema.get("type") == "object" and isinstance(schema.get("properties"), dict)):
        raise EvalError(f"{where}: tool {name!r}: 'parameters' must be a JSON schema of type object with properties")
    required = schema.get("required", [])
    if not (isinstance(required, list) and set(required) <= set(schema["properties"])):
        raise EvalError(f"{where}: tool {name!r}: 'required' must list some of its properties")
    for prop, spec in schema["properties"].items():
        if not isinstance(spec, dict) or spec.get("type") not in SCHEMA_TYPES:
            raise EvalError(
                f"{where}: tool {name!r}: parameter {prop!r} needs a JSON-schema type among {list(SCHEMA_TYPES)}"
            )
    return Tool(name, raw["name_for_human"], raw["description_for_model"], schema)


def qwen_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON schema as react_prompt.md's parameter list: name, description, required, schema."""
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "description": spec.get("description", ""),
            "required": name in required,
            "schema": {k: v for k, v in spec.items() if k != "description"},
        }
        for name, spec in schema["properties"].items()
    ]


def render_qwen_react(query: str, tools: list[Tool]) -> str:
    descs = [
        TOOL_DESC.format(
            name_for_model=t.name_for_model,
            name_for_human=t.name_for_human,
            description_for_model=t.description_for_model,
            parameters=json.dumps(qwen_parameters(t.parameters), ensure_ascii=False),
        )
        for t in tools
    ]
    return REACT_PROMPT.format(
        tool_descs="\n\n".join(descs), tool_names=",".join(t.name_for_model for t in tools), query=query
    )


TEMPLATES: dict[str, Callable[[str, list[Tool]], str]] = {"qwen_react": render_qwen_react}
"""protocol -> how a (query, tools) record becomes the prompt."""


def validate_arguments(tool: Tool, arguments: Any, where: str) -> None:
    """Gold arguments must fit the tool's schema: required present, known names, types and enums."""
    if not isinstance(arguments, dict):
        raise EvalError(f"{where}: 'action_input' must be a JSON object of arguments")
    props = tool.parameters["properties"]
    missing = [p for p in tool.parameters.get("required", []) if p not in arguments]
    unknown = [a for a in arguments if a not in props]
    if missing or unknown:
        raise EvalError(f"{where}: arguments of {tool.name_for_model!r}: missing {missing}, unknown {unknown}")
    for name, value in arguments.items():
        spec = props[name]
        if not SCHEMA_TYPES[spec["type"]](value):
            raise EvalError(f"{where}: argument {name!r} of {tool.name_for_model!r} should be of type {spec['type']}")
        if "enum" in spec and value not in spec["enum"]:
            raise EvalError(f"{where}: argument {name!r} of {tool.name_for_model!r} must be one of {spec['enum']}")
        if spec["type"] == "array" and "items" in spec:
            item_type = spec["items"].get("type")
            if item_type in SCHEMA_TYPES and not all(SCHEMA_TYPES[item_type](v) for v in value):
                raise EvalError(f"{where}: items of {name!r} should be of type {item_type}")

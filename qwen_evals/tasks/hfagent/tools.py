"""The agent's toolbox: transformers 4.31's test tools (fixed sentences embedding the arguments), and running a program with them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qwen_evals.scoring.restricted_python import RunResult, run


def _classifier(text: Any, labels: Any) -> str:
    return f"This is the classification of {text} along {labels}."


def _translator(text: Any, src_lang: Any, tgt_lang: Any) -> str:
    return f"This is the translation of {text} from {src_lang} to {tgt_lang}."


def _speaker(text: Any) -> str:
    return f"This is actually a sound reading {text}."


def _transcriber(audio: Any) -> str:
    if "sound" not in audio:
        raise ValueError(f"`audio` ({audio}) is not a sound.")
    return f"This is the transcribed text from {audio}."


def _image_generator(prompt: Any) -> str:
    return f"This is actually an image representing {prompt}."


def _image_captioner(image: Any) -> str:
    if "image" not in image:
        raise ValueError(f"`image` ({image}) is not an image.")
    return f"This is a description of {image}."


def _image_transformer(image: Any, prompt: Any) -> str:
    if "image" not in image:
        raise ValueError(f"`image` ({image}) is not an image.")
    return f"This is a transformation of {image} according to {prompt}."


def _question_answerer(text: Any, question: Any) -> str:
    return f"This is the answer to {question} from {text}."


def _image_qa(image: Any, question: Any) -> str:
    if "image" not in image:
        raise ValueError(f"`image` ({image}) is not an image.")
    return f"This is the answer to {question} from {image}."


def _text_downloader(url: Any) -> str:
    return f"This is the content of {url}."


def _summarizer(text: Any) -> str:
    return f"This is a summary of {text}."


def _video_generator(prompt: Any, seconds: Any = 2) -> str:
    return f"A video of {prompt}"


def _document_qa(image: Any, question: Any) -> str:
    return f"This is the answer to {question} from the document {image}."


def _image_segmenter(image: Any, prompt: Any) -> str:
    return f"This is the mask of {prompt} in {image}"


FAKE_TOOLS: dict[str, Callable[..., str]] = {
    "text_classifier": _classifier,
    "translator": _translator,
    "text_reader": _speaker,
    "summarizer": _summarizer,
    "transcriber": _transcriber,
    "image_generator": _image_generator,
    "image_captioner": _image_captioner,
    "image_transformer": _image_transformer,
    "text_qa": _question_answerer,
    "text_downloader": _text_downloader,
    "image_qa": _image_qa,
    "video_generator": _video_generator,
    "document_qa": _document_qa,
    "image_segmenter": _image_segmenter,
}


def run_program(code: str, inputs: dict[str, str]) -> RunResult:
    """A program with the fake tools, the inputs as variables, and 4.31's builtins."""
    return run(code, FAKE_TOOLS, inputs)


def tools_in_code(code: str) -> set[str]:
    """Tool names appearing anywhere in the code (a substring test, as 4.31 does)."""
    return {name for name in FAKE_TOOLS if name in code}


def tools_in_explanation(explanation: str) -> set[str]:
    return {name for name in FAKE_TOOLS if f"`{name}`" in explanation}

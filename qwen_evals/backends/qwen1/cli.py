"""Checkpoint conversion: `python -m qwen_evals.backends.qwen1.cli qwen1 SRC DST`."""

from __future__ import annotations

import argparse
import sys

from qwen_evals.backends.qwen1.cache import source_folder
from qwen_evals.backends.qwen1.convert import convert_qwen1
from qwen_evals.core.errors import EvalError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen_evals.backends.qwen1.cli", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    qwen1 = commands.add_parser(
        "qwen1", help="Qwen-7B / Qwen-7B-Chat (remote code, tiktoken) -> native Qwen2 checkpoint"
    )
    qwen1.add_argument("src", help="Qwen (v1) checkpoint: local folder or hub id (e.g. Qwen/Qwen-7B-Chat)")
    qwen1.add_argument("dst", help="output folder (new or empty)")
    qwen1.add_argument("--revision", default=None, help="hub commit, branch or tag (hub ids only)")
    kind = qwen1.add_mutually_exclusive_group()
    kind.add_argument("--chat", dest="chat", action="store_true", default=None, help="chat model: eos <|im_end|>")
    kind.add_argument("--base", dest="chat", action="store_false", help="base model: eos <|endoftext|>")
    qwen1.add_argument("--tiktoken", default=None, help="qwen.tiktoken to use instead of the one in SRC")
    qwen1.add_argument("--max-shard-gb", type=float, default=4.0, help="largest output safetensors file (default 4)")
    args = parser.parse_args(argv)
    try:
        folder, provenance = source_folder(args.src, args.revision)
        out = convert_qwen1(
            folder,
            args.dst,
            chat=args.chat,
            tiktoken_file=args.tiktoken,
            max_shard_bytes=int(args.max_shard_gb * (1 << 30)),
            provenance=provenance,
        )
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {out} (Qwen2ForCausalLM; load without trust_remote_code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

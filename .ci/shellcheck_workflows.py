"""shellcheck over every `run:` script of the GitHub workflows, as actionlint does.

actionlint itself is not installable from a package registry (its PyPI package
downloads the binary from GitHub at build time), so CI validates the workflows'
structure with check-jsonschema's bundled GitHub-workflow schema and checks
their scripts here. `${{ ... }}` expressions become underscores of the same
length first (as actionlint does), so they read as plain words.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def scripts(workflow: Path):
    for job_name, job in (yaml.safe_load(workflow.read_text(encoding="utf-8")).get("jobs") or {}).items():
        for number, step in enumerate(job.get("steps") or [], start=1):
            if "run" in step:
                yield f"{workflow}: job {job_name}, step {number} ({step.get('name', 'unnamed')})", step["run"]


def main(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        for where, script in scripts(Path(path)):
            text = "#!/bin/bash\n" + EXPRESSION.sub(lambda m: "_" * len(m.group()), script)
            done = subprocess.run(["shellcheck", "-"], input=text, capture_output=True, text=True)
            if done.returncode != 0:
                failed += 1
                print(f"{where}:\n{done.stdout}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

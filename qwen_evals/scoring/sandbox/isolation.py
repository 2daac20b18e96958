"""Isolation modes: what wraps the harness's command line, and how to stop what a program left behind.

`Sandbox` tries `MODES` in order, strongest first, and keeps the first under which a probe program passes. A mode
that gives the program no network of its own leaves the harness's audit hook to block sockets. Another mode is one
more `Isolation` subclass in `MODES`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from qwen_evals.scoring.sandbox import bwrap
from qwen_evals.scoring.sandbox.processes import children, kill, kill_uids, wait_unreaped


class Isolation:
    """How one mode runs the harness; `uid` is the fresh sandbox uid, or None when the uid is not switched."""

    name: str
    """Recorded in summary.json (`sandbox.isolation`)."""
    needs: str
    """What the machine must have, for the warning when the mode is not available."""
    namespaces: bool
    """Own network and pid namespaces: no address is reachable, and every process dies with the program."""
    filesystem: bool
    """Own mount namespace: the host's files are out of sight (no audit-hook guard for files needed)."""

    def available(self) -> bool:
        """Whether this machine has what the mode needs (the probe then checks that it works)."""
        raise NotImplementedError

    def command(self, uid: int | None, python: str, run_dir: str, tmpfs_bytes: int) -> list[str]:
        """The harness's command line up to and including the interpreter."""
        raise NotImplementedError

    def program_dir(self, run_dir: str) -> str:
        """The program's working directory (holding program.py) as the program sees it."""
        return run_dir

    def notes(self) -> dict[str, Any]:
        """What the sandbox's `describe()` should add about this mode here (e.g. a missing option)."""
        return {}

    def popen_user(self, uid: int | None) -> dict[str, Any]:
        """`subprocess.Popen` arguments that switch the uid, where the prefix does not switch it itself."""
        return {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}

    def kill_on_timeout(self, pid: int) -> None:
        """Past the wall-clock limit, before the process group of `pid` (the command's process) is killed."""
        raise NotImplementedError

    def kill_strays(self, uid: int | None) -> None:
        """After the command's process was reaped: kill processes of the program that outlived it."""
        raise NotImplementedError


class OwnPidNamespace(Isolation):
    """A mode whose harness is pid 1 of its own pid namespace, so every process of the program dies with it."""

    namespaces = True

    def kill_on_timeout(self, pid: int) -> None:
        # Kill the namespace's init (the harness), not the wrapper: the kernel then
        # kills and reaps everything inside, and the wrapper reaps the init.
        for child in children(pid):
            kill(child)
        wait_unreaped(pid, 5.0)

    def kill_strays(self, uid: int | None) -> None:
        pass  # none: they died with the namespace's init


class Bubblewrap(OwnPidNamespace):
    """bwrap: every namespace, and a root holding only the interpreter (see `bwrap`).

    As root, bwrap itself runs as the fresh uid: inside a user namespace it started as root, the program would be
    uid 0 on the host (without capabilities, but the owner of every root-owned file it could see).
    """

    name = "bwrap"
    needs = "bubblewrap (the bwrap command, Debian package bubblewrap) and permission to create user namespaces"
    filesystem = True

    def available(self) -> bool:
        return shutil.which("bwrap") is not None

    def command(self, uid: int | None, python: str, run_dir: str, tmpfs_bytes: int) -> list[str]:
        return bwrap.command(python, os.path.join(run_dir, "program.py"), tmpfs_bytes)

    def program_dir(self, run_dir: str) -> str:
        return bwrap.PROGRAM_DIR

    def notes(self) -> dict[str, Any]:
        missing = bwrap.missing_options()
        return {"bwrap_missing_options": list(missing)} if missing else {}


class Namespaces(OwnPidNamespace):
    """`unshare`: a network namespace (a down loopback and nothing else) and a pid namespace."""

    name = "unshare"
    needs = "the unshare command and permission to create namespaces"
    filesystem = False

    def available(self) -> bool:
        return shutil.which("unshare") is not None

    def command(self, uid: int | None, python: str, run_dir: str, tmpfs_bytes: int) -> list[str]:
        prefix = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
        prefix += [f"--setuid={uid}", f"--setgid={uid}"] if uid is not None else ["--user", "--map-root-user"]
        return [*prefix, "--", python]

    def popen_user(self, uid: int | None) -> dict[str, Any]:
        return {}  # unshare switches the uid


class NoNamespaces(Isolation):
    """Only the process group (and the uid, when switched): processes that leave the group are found by uid."""

    name = "process"
    needs = ""
    namespaces = False
    filesystem = False

    def available(self) -> bool:
        return True

    def command(self, uid: int | None, python: str, run_dir: str, tmpfs_bytes: int) -> list[str]:
        return [python]

    def kill_on_timeout(self, pid: int) -> None:
        pass  # the process group is killed next

    def kill_strays(self, uid: int | None) -> None:
        if uid is not None:
            kill_uids({uid})


MODES: tuple[Isolation, ...] = (Bubblewrap(), Namespaces(), NoNamespaces())
"""Strongest first: the default is the first that works here."""

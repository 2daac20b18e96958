"""Isolation modes: what wraps the harness's command line, and how to stop what a program left behind.

`Sandbox` tries `MODES` in order, strongest first, and keeps the first under which a probe program passes. A mode
that gives the program no network of its own leaves the harness's audit hook to block sockets. Another mode is one
more `Isolation` subclass in `MODES`.
"""

from __future__ import annotations

import shutil
from typing import Any

from qwen_evals.scoring.sandbox.processes import children, kill, kill_uids, wait_unreaped


class Isolation:
    """How one mode runs the harness; `uid` is the fresh sandbox uid, or None when the uid is not switched."""

    namespaces: bool
    """Own network and pid namespaces: no address is reachable, and every process dies with the program."""

    def available(self) -> bool:
        """Whether this machine has what the mode needs (the probe then checks that it works)."""
        raise NotImplementedError

    def command(self, uid: int | None) -> list[str]:
        """The prefix of the harness's command line."""
        raise NotImplementedError

    def popen_user(self, uid: int | None) -> dict[str, Any]:
        """`subprocess.Popen` arguments that switch the uid, where the prefix does not switch it itself."""
        raise NotImplementedError

    def kill_on_timeout(self, pid: int) -> None:
        """Past the wall-clock limit, before the process group of `pid` (the command's process) is killed."""
        raise NotImplementedError

    def kill_strays(self, uid: int | None) -> None:
        """After the command's process was reaped: kill processes of the program that outlived it."""
        raise NotImplementedError


class Namespaces(Isolation):
    """`unshare`: a network namespace (a down loopback and nothing else) and a pid namespace."""

    namespaces = True

    def available(self) -> bool:
        return shutil.which("unshare") is not None

    def command(self, uid: int | None) -> list[str]:
        prefix = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
        prefix += [f"--setuid={uid}", f"--setgid={uid}"] if uid is not None else ["--user", "--map-root-user"]
        prefix.append("--")
        return prefix

    def popen_user(self, uid: int | None) -> dict[str, Any]:
        return {}  # unshare switches the uid

    def kill_on_timeout(self, pid: int) -> None:
        # Kill the namespace's init, not unshare: the kernel then kills and
        # reaps everything inside, and unshare reaps the init.
        for child in children(pid):
            kill(child)
        wait_unreaped(pid, 5.0)

    def kill_strays(self, uid: int | None) -> None:
        pass  # none: they died with the namespace's init


class NoNamespaces(Isolation):
    """Only the process group (and the uid, when switched): processes that leave the group are found by uid."""

    namespaces = False

    def available(self) -> bool:
        return True

    def command(self, uid: int | None) -> list[str]:
        return []

    def popen_user(self, uid: int | None) -> dict[str, Any]:
        return {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}

    def kill_on_timeout(self, pid: int) -> None:
        pass  # the process group is killed next

    def kill_strays(self, uid: int | None) -> None:
        if uid is not None:
            kill_uids({uid})


MODES: tuple[Isolation, ...] = (Namespaces(), NoNamespaces())

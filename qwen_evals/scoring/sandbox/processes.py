"""Process helpers of the sandbox: waiting for a process without reaping it, killing groups and uids, /proc scans.

A process that has exited but is not reaped still holds its pid (and, as a group leader, its process group id),
so the sandbox can kill what the program left behind without hitting an unrelated process that reused the pid.
"""

from __future__ import annotations

import os
import select
import signal
import time


def wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait until `pid` exits, without reaping it; False on timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            return bool(select.select([pidfd], [], [], timeout)[0])
        finally:
            os.close(pidfd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.005)
    return False


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        return []


def processes(include_zombies: bool = True) -> list[tuple[int, int]]:
    """(pid, real uid) of the processes in /proc."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as file:
                fields = dict(line.split(":", 1) for line in file if ":" in line)
        except OSError:
            continue
        if include_zombies or not fields.get("State", "").strip().startswith("Z"):
            found.append((int(entry), int(fields["Uid"].split()[0])))
    return found


def live_processes(uids: set[int]) -> list[int]:
    return [pid for pid, uid in processes(include_zombies=False) if uid in uids]


def count_processes(uid: int) -> int:
    return sum(1 for _, owner in processes() if owner == uid)


def kill_uids(uids: set[int]) -> None:
    """Kill every live process of sandbox uids (strays that left the process group)."""
    for _ in range(50):
        pids = live_processes(uids)
        if not pids:
            return
        for pid in pids:
            kill(pid)
        time.sleep(0.005)

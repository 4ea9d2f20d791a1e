"""CPU time and resident memory of a process and its children, read from /proc (Linux).

Hypercorn with several workers is a parent plus spawned children, so both are summed over the tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    cpu: float  # seconds of user + system time
    rss: int  # bytes


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "(comm)"; [0] is the state


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    found = [pid]
    for child in _children(pid):
        found.extend(tree(child))
    return found


def sample(pid: int) -> Sample:
    cpu = 0.0
    rss = 0
    for p in tree(pid):
        fields = _stat(p)
        if fields is None:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        rss += int(fields[21]) * _PAGE
    return Sample(cpu, rss)

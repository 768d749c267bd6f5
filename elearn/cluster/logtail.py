"""The last lines of a log, and how they cross a Spark error intact.

A node that fails shows its log's tail to the user through the Spark task's exception; Spark wraps
that text in its own, so the tail's lines carry a prefix that ``spark_error_message`` keeps.
"""
from __future__ import annotations

import os
import sys

QUOTE = "  | "  # prefix of quoted lines (a node's log tail) that a Spark error must carry whole


def tail(path: str, lines: int = 30) -> str:
    """The last ``lines`` lines of the file at ``path`` ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def quoted(text: str) -> str:
    """``text`` as lines that ``spark_error_message`` keeps when the error crosses Spark."""
    return "\n".join(QUOTE + line for line in text.splitlines())


def spark_error_message(exc: Exception) -> str:
    """What the user needs of a Spark job's error: elearn's own message from the task if there
    is one (with its quoted lines), else the first lines of Spark's."""
    text = str(exc)
    for marker in ("ElearnError:", "ClusterError:", "FeedError:", "JobError:", "StorageError:"):
        if marker in text:
            first, *rest = text[text.index(marker):].splitlines()
            kept = []
            for line in rest:
                if not line.startswith(QUOTE):
                    break
                kept.append(line)
            return "\n".join([first, *kept])
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][:12])


class FollowedFile:
    """The lines a growing file (a node's log) gained since the last look."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def new_lines(self, final: bool = False) -> list[str]:
        """Complete new lines (and, when ``final``, a last one without its newline)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        end = len(data) if final else data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode("utf-8", "replace").splitlines()


def relay(lines) -> None:
    """Show another process's output lines through this one's ``sys.stdout`` (a terminal, a log
    or a notebook cell, wherever the driver's output goes)."""
    for line in lines:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # the driver's stdout is gone: the log still has it
            return

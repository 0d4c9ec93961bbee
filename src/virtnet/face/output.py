"""Where a verb's output goes: an object handed to it, never a replaced ``sys.stdout``.

In the user's shell a verb prints to this process's streams (whatever ``sys.stdout`` and
``sys.stderr`` are when it prints: a test runner may have swapped them). Inside the daemon it
prints into a :class:`Capture`, which keeps stdout and stderr interleaved in the order they
were written, for the thin client to replay.
"""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

import click

STDOUT, STDERR = 1, 2


class Capture:
    """What one invocation printed: (stream, text) chunks in the order they were written."""

    def __init__(self) -> None:
        self.chunks: list[list[Any]] = []

    def add(self, stream: int, text: str) -> None:
        if not text:
            return
        if self.chunks and self.chunks[-1][0] == stream:
            self.chunks[-1][1] += text
        else:
            self.chunks.append([stream, text])

    def text(self, stream: int) -> str:
        return "".join(text for fd, text in self.chunks if fd == stream)


class CapturedStream(io.TextIOBase):
    """A text stream writing into one stream of a Capture (not a terminal, no descriptor)."""

    def __init__(self, capture: Capture, stream: int) -> None:
        super().__init__()
        self.capture = capture
        self.stream = stream

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            # click probes with b"" to tell binary from text streams: this one is text.
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.capture.add(self.stream, text)
        return len(text)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a captured stream has no file descriptor")


class Output:
    """A verb's two output streams; None stands for the process's own (looked up when
    printing)."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout = stdout
        self.stderr = stderr

    @classmethod
    def captured(cls, capture: Capture) -> Output:
        """Output into CAPTURE, stdout and stderr kept apart but in order."""
        return cls(CapturedStream(capture, STDOUT), CapturedStream(capture, STDERR))

    def echo(self, message: Any = "", *, err: bool = False, nl: bool = True,
             color: bool | None = None) -> None:
        """click.echo into this output (click strips styles off what is not a terminal)."""
        click.echo(message, file=self.stderr if err else self.stdout, err=err, nl=nl,
                   color=color)

    def stream(self, err: bool = False) -> TextIO:
        """The stream itself, for writers that want one (rich's Console)."""
        if err:
            return self.stderr if self.stderr is not None else sys.stderr
        return self.stdout if self.stdout is not None else sys.stdout

    def isatty(self) -> bool:
        """Whether stdout is a terminal (decides rich's width and the lab's spinner)."""
        return self.stream().isatty()


__all__ = ["STDERR", "STDOUT", "Capture", "CapturedStream", "Output"]

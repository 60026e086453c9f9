"""What the CLI shows of text that others choose. A rig's operator chooses every byte of an answer (and a tracker
every byte of its refusals): escape sequences could retitle the terminal, clear it or rewrite what was shown, so
whatever they send is printed without terminal control characters. `Screen` also keeps every message of
`luckrig-node taste` on a line of its own, whatever was left open before it (a queue status, an answer)."""

import re
import sys

# ANSI escape sequences, in their 7-bit (ESC ...) and 8-bit (C1) forms: CSI (colours, cursor moves, clearing),
# control strings (OSC window titles and hyperlinks, DCS, SOS, PM, APC) up to their terminator, and the other
# two-character escapes.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
)
# The start of an escape sequence that a later piece of the stream may complete, at the end of the text.
_UNFINISHED = re.compile(
    r"(?:(?:\x1b\[|\x9b)[0-?]*[ -/]*"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*\x1b?"
    r"|\x1b[ -/]*)\Z"
)
# C0 controls but newline and tab, DEL, and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HOLD_MAX = 256  # an unfinished sequence longer than this is not held back any more: it is stripped as it is


def printable(text) -> str:
    """`text` without escape sequences and control characters (newline and tab kept): safe for a terminal."""
    return _CONTROL.sub("", _ESCAPE.sub("", str(text)))


class PrintableStream:
    """`printable` for text that arrives in pieces: an escape sequence cut between two pieces is held back until
    the next piece completes it, so that none of it reaches the terminal."""

    def __init__(self):
        self.held = ""

    def feed(self, piece: str) -> str:
        text, self.held = self.held + piece, ""
        tail = _UNFINISHED.search(text, max(0, len(text) - _HOLD_MAX))
        if tail is not None and tail.start() < len(text):
            text, self.held = text[: tail.start()], text[tail.start() :]
        return printable(text)

    def flush(self) -> str:
        text, self.held = self.held, ""
        return printable(text)


class Screen:
    """The taster's terminal: the answer on stdout, everything else on stderr, all of it printable. It remembers
    which stream has an unfinished line (the queue status, rewritten in place; an answer still streaming), so that
    the next line starts on a line of its own."""

    def __init__(self):
        self.shown = PrintableStream()
        self.open_on = None  # the stream whose last line is unfinished, if any

    def status(self, text: str) -> None:
        """A status rewritten in place, such as the position in the rig's queue."""
        print(f"\r[{printable(text)}]", end="", file=sys.stderr, flush=True)
        self.open_on = sys.stderr

    def end_status(self) -> None:
        if self.open_on is sys.stderr:
            self.end_line()

    def answer(self, piece: str) -> None:
        """A piece of the answer, shown as it arrives."""
        self.end_status()
        print(self.shown.feed(piece), end="", flush=True)
        self.open_on = sys.stdout

    def answer_ends(self) -> None:
        print(self.shown.flush())
        self.open_on = None

    def say(self, message: str) -> None:
        """A line of its own on stderr."""
        self.end_line()
        print(printable(message), file=sys.stderr)

    def end_line(self) -> None:
        if self.open_on is not None:
            print(file=self.open_on, flush=True)
            self.open_on = None

"""Stop strings over streamed text: emit what cannot be the start of a stop string, trim at a match."""

from __future__ import annotations


class StopMatcher:
    """Feed decoded text pieces; get back the text that is safe to emit.

    Text that might be the beginning of a stop string is held back until the next piece
    decides it, so a stream never shows a partial stop string that is later trimmed.
    """

    def __init__(self, stops: tuple[str, ...], include: bool = False) -> None:
        self.stops = stops
        self.include = include  # vLLM's include_stop_str_in_output: keep the matched stop string
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        text = self._pending + piece
        hits = [(i, i + len(s)) for i, s in ((text.find(s), s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._pending = ""
            start, end = min(hits)
            return text[: end if self.include else start]
        hold = self._held_suffix(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The held-back text once generation ended without a match."""
        text, self._pending = self._pending, ""
        return "" if self.stopped else text

    def _held_suffix(self, text: str) -> int:
        # Longest suffix of text that is a proper prefix of some stop string.
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best

"""Split streamed text into sentences as they complete, so speech can start before the comment ends."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (possibly repeated, possibly followed by a closing quote or bracket)
# and whitespace; "3.5" and "e.g." inside a word do not end it because whitespace must follow.
_END = re.compile(r"""[.!?…]+["')\]]*\s+""")
_FINAL = re.compile(r"""[.!?…]+["')\]]*\s*$""")


def end_at_sentence(text: str) -> str:
    """Cut an unfinished last sentence (the token cap stopped the model mid-sentence) when at
    least one whole sentence comes before it; a comment of one unfinished sentence stays as it is."""
    stripped = text.strip()
    if _FINAL.search(stripped):
        return stripped
    ends = list(_END.finditer(stripped))
    return stripped[: ends[-1].end()].strip() if ends else stripped


class SentenceSplitter:
    """Feed text deltas; get back each sentence once it is complete."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the sentences it completed (stripped, non-empty)."""
        self._buffer += delta
        sentences = []
        while match := _END.search(self._buffer):
            sentence, self._buffer = self._buffer[: match.end()].strip(), self._buffer[match.end() :]
            if any(c.isalnum() for c in sentence):
                sentences.append(sentence)
        return sentences

    def flush(self) -> str:
        """The unfinished rest (the comment ended without final punctuation), or ''."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest if any(c.isalnum() for c in rest) else ""

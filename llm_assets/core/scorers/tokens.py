"""How the text metrics split text into tokens: one definition, shared by the metric modules and the scorers.

Three tokenizations, each kept because a metric's published numbers depend on it:
- ROUGE: case-folded runs of letters and digits (`[^\\W_]+`). On ASCII this is exactly rouge-score's own
  tokenizer (lower-case, `[a-z0-9]+`), so the bunny's ROUGE-L is unchanged; unlike rouge-score's it keeps
  accented, Cyrillic or CJK letters instead of dropping them, so non-English answers are not scored 0.
  A run of CJK characters without spaces is one token.
- Jaccard: word tokens as written (`\\w+`, case-sensitive, underscores inside words), the bunny's
  definition, so JSON punctuation is ignored and a key and its value are two tokens.
- Length: whitespace-separated pieces, the plain "words per answer" a reader expects.
BLEU keeps sacrebleu's own tokenizers (13a by default), the ones its scores are published with.
"""

from __future__ import annotations

import re

_ROUGE_TOKEN = re.compile(r"[^\W_]+")
_WORD = re.compile(r"\w+")


class RougeTokenizer:
    """rouge-score's tokenizer interface (an object with `tokenize(text) -> list[str]`)."""

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN.findall(text.casefold())


def words(text: str) -> list[str]:
    """Jaccard's tokens."""
    return _WORD.findall(text)


def length(text: str) -> int:
    """Whitespace tokens: the answer length reported by the text scorer."""
    return len(text.split())

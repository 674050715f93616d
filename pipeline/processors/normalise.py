"""Text normalisation. PLACEHOLDER depth: the triage issue (#8) expands slang and masks personal data."""

from __future__ import annotations

import html
import re

_WS = re.compile(r"\s+")
_REPEAT = re.compile(r"(.)\1{2,}")


def clean(text: str) -> str:
    """HTML entities, runs of the same character (``bangeeeet``) and whitespace."""
    text = html.unescape(text)
    text = _REPEAT.sub(r"\1\1", text)
    return _WS.sub(" ", text).strip()


def normalise(text: str) -> str:
    """Text as the classifier should see it: cleaned and lower-cased."""
    return clean(text).lower()


def mask_pii(text: str) -> str:
    """What routed topics may carry of the citizen's text. PLACEHOLDER: returns it cleaned only."""
    return clean(text)

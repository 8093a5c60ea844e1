"""Claim lines: what a chapter concludes from its numbers, printed so that every machine can check it.

A chapter's prose draws conclusions from measured numbers ("fusion beats the best single modality"). The numbers
themselves are exact only on the platform the stored outputs were made on; on another CPU, a GPU or another torch
version training lands on slightly different floats. The conclusion should not move. So each one is printed as a
claim line next to the numbers::

    >>> claim("fused beats the best single modality by >= 0.10", fused - max(image, text) >= 0.10)
    claim: fused beats the best single modality by >= 0.10: yes

The notebook tests compare claim lines on every machine (README, "What the tests check where"): a lesson whose
claim no longer holds prints ``NO`` and fails everywhere. Write the statement with the margin the lesson needs, not
the decimals one run happened to give, and keep it true over several seeds.
"""

from __future__ import annotations

__all__ = ["CLAIM_PREFIX", "claim"]

CLAIM_PREFIX = "claim: "
"""How every claim line starts (the notebook tests keep only these lines on a platform other than the reference)."""


def claim(statement: str, holds) -> None:
    """Print ``claim: <statement>: yes`` (or ``NO``).

    It returns nothing, so a cell may end with it without echoing a value.

    Args:
        statement: the conclusion, in words, with its threshold (one line, no trailing colon).
        holds: whether the measurement supports it: a bool, or anything with a truth value (a 0-d tensor, a numpy
            bool).
    """
    if not isinstance(statement, str) or not statement.strip() or "\n" in statement:
        raise ValueError(f"statement must be one non-empty line of text, got {statement!r}")
    print(f"{CLAIM_PREFIX}{statement.strip()}: {'yes' if bool(holds) else 'NO'}")

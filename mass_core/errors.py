"""Exceptions raised on bad input, named after what the user must fix."""

from __future__ import annotations

__all__ = ["CaseError"]


class CaseError(ValueError):
    """A single case cannot be processed.

    The message is one line naming the case and the reason, so that it can be
    shown to the user as is and written to a dataset's ``skipped.csv``.

    Args:
        case_id: identifier of the offending case.
        reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, case_id: str, reason: str) -> None:
        self.case_id = case_id
        self.reason = reason
        super().__init__(f"case {case_id!r}: {reason}")

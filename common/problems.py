"""One problem type and one formatter for every validator: the manifest and lesion tables, the
EMBED adapter, ``cli.py evaluate``'s CSV files and ``cli.py check-data``'s image checks.

A `Problem` says where (the file, its row as a spreadsheet shows it, the column), which pair
and which image or cache file it concerns, and why; `format_problems` lists many at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

ROW_CONVENTION = "row numbers count the header as row 1, as a spreadsheet shows the file"
MAX_LISTED = 200


@dataclass(frozen=True)
class Problem:
    """One problem: where it is, what it concerns and what is wrong.

    ``file``: the table (or other file) the problem is in; ``row``: its row as a spreadsheet
    shows the file (header = row 1, first data row = row 2), None for the whole file;
    ``column``: the column, None for a whole row or file; ``reason``: what is wrong;
    ``kind``: a short category (counted by `format_problems`); ``pair_id``: the pair the row
    belongs to; ``path``: the image or cache file the row points at, when that file is where
    the problem was found.
    """

    file: str
    row: int | None
    column: str | None
    reason: str
    kind: str = "problem"
    pair_id: str | None = None
    path: str | None = None

    @property
    def message(self) -> str:
        """The reason (the name the field had before the types were shared)."""
        return self.reason

    def location(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f", column {self.column}" if self.row is not None else f" column {self.column}"
        return where

    def __str__(self) -> str:
        details = []
        if self.pair_id:
            details.append(f"pair {self.pair_id}")
        if self.path:
            details.append(f"file {self.path}")
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.location()}: {self.reason}{suffix}"

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


def format_problems(
    problems: Sequence[Problem],
    subject: str = "the input",
    limit: int = MAX_LISTED,
    more: str | None = None,
    rows_note: bool = True,
    by_kind: bool = True,
) -> str:
    """A heading with the count, one indented line per problem (the first ``limit``), the
    number left out (``more`` says where the rest are) and the count of each kind."""
    problems = list(problems)
    note = f" ({ROW_CONVENTION}; row 2 is the first data row)" if rows_note else ""
    lines = [f"{len(problems)} problem(s) in {subject}{note}:"]
    lines += [f"  {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        where = f" ({more})" if more else ""
        lines.append(f"  ... and {len(problems) - limit} more{where}")
    if by_kind and problems:
        kinds = Counter(problem.kind for problem in problems)
        lines.append("by kind: " + ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items())))
    return "\n".join(lines)


class ProblemsError(ValueError):
    """Bad input; ``problems`` lists every `Problem` found and the message formats them."""

    subject = "the input"
    more = None  # where the problems left out of the message are

    def __init__(
        self, problems: Sequence[Problem], subject: str | None = None, hint: str | None = None
    ):
        self.problems = list(problems)
        if subject is not None:
            self.subject = subject
        message = format_problems(self.problems, self.subject, more=self.more)
        super().__init__(message + (f"\n{hint}" if hint else ""))

"""Markdown tables for the pages code writes (model cards, reports): one helper, one format."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str | None = None) -> list[str]:
    """The lines of a GitHub-flavoured table; ``empty``: an italic line instead when there are no rows."""
    if not rows and empty is not None:
        return [f"_{empty}_"]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]

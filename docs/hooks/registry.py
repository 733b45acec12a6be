"""MkDocs hook: render the solver and rule registry where a page asks for it.

A page writes ``<!-- registry -->`` on a line of its own; the table comes from
:func:`tops_core.registry.table`, so the docs list exactly what ``select`` runs.
"""

from __future__ import annotations

from tops_core.registry import table

MARKER = "<!-- registry -->"


def on_page_markdown(markdown: str, **kwargs) -> str:
    """Replace the marker by the registry's table."""
    return markdown.replace(MARKER, table())

"""Page templates: a study page's prose lives in a Markdown template (``conf/pages/<page>.md.j2``) and its numbers
come from the committed rows, so rewording a finding never touches code and no number is typed into prose.

Jinja2 in strict mode: a name the template uses that the page does not give is an error, not an empty string.
Filters: ``fmt`` (a format spec: ``{{ q | fmt('.3f') }}``) and ``json``; a page adds its own helpers as filters. A
template may extend another of its folder (``{% extends "study.md.j2" %}``), rewording just the blocks it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import jinja2


def render_page(template: str | Path, context: Mapping, filters: Mapping[str, Callable] | None = None) -> str:
    """The page ``template`` (a file) renders with ``context``."""
    path = Path(template)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(path.parent), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update({"fmt": format, "json": json.dumps, **(filters or {})})
    return env.get_template(path.name).render(**context)

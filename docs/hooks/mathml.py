"""MkDocs hook: turn arithmatex's LaTeX into MathML at build time.

Browsers render MathML natively, so the site ships no math JavaScript and
fetches nothing from a CDN, at build time or when read.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.S)
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)


def _mathml(latex: str, display: str) -> str:
    return convert(html.unescape(latex).strip(), display=display)


def on_page_content(content: str, **kwargs) -> str:
    """Replace every arithmatex block and inline span by its MathML."""
    content = _BLOCK.sub(lambda m: f'<div class="math">{_mathml(m.group(1), "block")}</div>', content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), content)

"""Pieces of the self-contained HTML pages fxexport writes (node explorer, verify/optimize reports).

Every name on those pages can come from an untrusted file, so text goes through :func:`esc`
(HTML text and attribute values), data for scripts through :func:`script_json` (safe inside a
``<script type="application/json">``), and each page carries a Content-Security-Policy that
allows no network at all and runs only the page's own script (by its hash), so an injected
``<script>`` or ``onerror=`` would not run even if escaping failed.

Example:
    >>> esc('</script><img src=x onerror="alert(1)">')
    '&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;'
    >>> script_json({"name": "</script>&\\u2028"})
    '{"name":"\\\\u003c/script\\\\u003e\\\\u0026\\\\u2028"}'
    >>> "default-src 'none'" in csp_meta()
    True
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

__all__ = ["esc", "script_json", "csp_meta", "page"]

_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def esc(value: Any) -> str:
    """``value`` as HTML text or a quoted attribute value (``& < > " '`` escaped)."""
    return html.escape(str(value), quote=True)


def script_json(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` element: ``<``, ``>``, ``&``, U+2028/9 escaped.

    The result parses back to ``data`` with ``JSON.parse`` (and :func:`json.loads`), and
    contains no ``</script>`` or ``<!--`` whatever the strings in ``data`` hold.

    Example:
        >>> text = script_json(["</script><!--", "a\\u2029b"])
        >>> "<" in text, json.loads(text) == ["</script><!--", "a\\u2029b"]
        (False, True)
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return "".join(_SCRIPT_ESCAPES.get(c, c) for c in text)


def csp_meta(script: str | None = None) -> str:
    """A ``<meta>`` Content-Security-Policy: nothing from the network; only ``script`` (by hash) runs.

    Example:
        >>> meta = csp_meta("console.log(1)")
        >>> "script-src 'sha256-" in meta, "connect-src" in meta
        (True, False)
    """
    policy = ["default-src 'none'", "style-src 'unsafe-inline'", "img-src data:", "base-uri 'none'",
              "form-action 'none'"]
    if script is not None:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
        policy.append(f"script-src 'sha256-{digest}'")
    return f'<meta http-equiv="Content-Security-Policy" content="{"; ".join(policy)}">'


def page(title: str, body: str, *, css: str, script: str | None = None, head: str = "") -> str:
    """A whole HTML document: ``title`` (escaped here), trusted ``body``/``css``/``script`` markup.

    ``head`` goes into ``<head>`` after the style (e.g. a ``<script type="application/json">``
    built with :func:`script_json`).

    Example:
        >>> doc = page("a<b", "<p>hi</p>", css="p{}")
        >>> "<title>a&lt;b</title>" in doc, doc.startswith("<!DOCTYPE html>")
        (True, True)
    """
    script_tag = f"<script>{script}</script>" if script is not None else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"{csp_meta(script)}\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{css}</style>\n{head}</head>\n<body>\n{body}\n{script_tag}\n"
        "</body>\n</html>\n"
    )

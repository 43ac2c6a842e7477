"""Which URLs the server accepts where the spec asks for one (media, callback URLs)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["url_problem"]

_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=\s]{64,}$")


def url_problem(url: object, kind: str = "") -> str | None:
    """Why ``url`` is not a public http(s) URL the server accepts, or None when it is."""
    what = f"a public http(s) {kind} URL" if kind else "a public http(s) URL"
    if not isinstance(url, str):
        return f"must be {what}"
    if url[:5].lower() == "data:":
        return (f"must be {what}; data: URLs (base64) are not supported: upload the file "
                "and pass its URL")
    if any(c.isspace() for c in url):
        return f"must be {what} without spaces (percent-encode them as %20)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"must be {what}; this one cannot be parsed"
    if parts.scheme.lower() not in ("http", "https") or not host:
        if not parts.scheme and _BASE64_RE.match(url):
            return (f"must be {what}; base64 data is not supported: upload the file and "
                    "pass its URL")
        return f"must be {what}"
    return None

"""Remove credentials from URLs and headers before they reach a log, an event or a span.

URLs keep their shape (scheme, host, port, path, parameter names) so they stay useful for
debugging; only the secret parts are replaced: the userinfo becomes ``REDACTED:REDACTED``
(as the OpenTelemetry HTTP conventions ask for ``url.full``) and the value of every query
or fragment parameter whose name looks like a secret becomes ``REDACTED``. Headers keep
their names; the values of credential headers become ``REDACTED``.

A name "looks like a secret" when it is one of the well-known ones (``api_key``,
``token``, ``signature``, ``X-Amz-Signature``...) or when one of its words is a secret
word (``key``, ``token``, ``secret``, ``password``, ``signature``...), so ``pageToken``,
``client_secret`` and ``X-Goog-Signature`` are caught without being listed. Redacting a
harmless value by mistake costs little; leaking a credential costs a lot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote_plus, urlsplit

if TYPE_CHECKING:
    from ._httpx_compat import URL, Headers

__all__ = [
    "REDACTED",
    "is_secret_header",
    "is_secret_parameter",
    "redact_headers",
    "redact_url",
]

REDACTED: Final = "REDACTED"
"""What a secret value is replaced with."""

# Words that make a parameter or header name secret wherever they appear in it.
_SECRET_WORDS: Final = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "jwt",
        "key",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "sessionid",
        "sig",
        "signature",
        "token",
    }
)

# Whole names that are secrets even though none of their words is a secret word.
_SECRET_NAMES: Final = frozenset(
    {
        "access_token",
        "code",
        "api_key",
        "client_secret",
        "id_token",
        "refresh_token",
        "sas",
        "x_amz_security_token",
    }
)

# Header names that carry a secret word but never a credential.
_PUBLIC_HEADERS: Final = frozenset(
    {
        "idempotency-key",
        "sec-websocket-key",
        "www-authenticate",
        "proxy-authenticate",
    }
)

# Splits snake_case, kebab-case, dotted names and camelCase into lowercase words.
_WORD_BOUNDARY: Final = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    words = [w.lower() for w in _WORD_BOUNDARY.split(name) if w]
    if not words:
        return False
    if "_".join(words) in _SECRET_NAMES:
        return True
    return any(word in _SECRET_WORDS for word in words)


def is_secret_parameter(name: str) -> bool:
    """True if a query parameter called *name* may carry a credential.

    Example:
        >>> is_secret_parameter("api_key"), is_secret_parameter("pageToken")
        (True, True)
        >>> is_secret_parameter("page")
        False
    """
    return _secret_name(unquote_plus(name))


def is_secret_header(name: str) -> bool:
    """True if a header called *name* may carry a credential.

    Example:
        >>> is_secret_header("Authorization"), is_secret_header("X-Api-Key")
        (True, True)
        >>> is_secret_header("Content-Type"), is_secret_header("Idempotency-Key")
        (False, False)
    """
    if name.lower() in _PUBLIC_HEADERS:
        return False
    return _secret_name(name)


def _redact_pairs(text: str) -> str:
    """Replace secret values in ``a=1&b=2`` (a query string or a fragment)."""
    if "=" not in text:
        return text
    parts = text.split("&")
    changed = False
    for index, part in enumerate(parts):
        name, sep, value = part.partition("=")
        if sep and value and is_secret_parameter(name):
            parts[index] = f"{name}={REDACTED}"
            changed = True
    return "&".join(parts) if changed else text


def redact_url(url: str | URL) -> str:
    """The URL as a string, without its credentials.

    The userinfo (``user:password@``) becomes ``REDACTED:REDACTED@``; values of query and
    fragment parameters with secret-looking names become ``REDACTED``; everything else is
    kept as written. A string that does not parse as a URL is replaced as a whole.

    Example:
        >>> redact_url("https://bob:hunter2@api.test/v1/items?page=2&api_key=abc123")
        'https://REDACTED:REDACTED@api.test/v1/items?page=2&api_key=REDACTED'
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}:{REDACTED}@{netloc.rpartition('@')[2]}"
    query = _redact_pairs(parts.query)
    fragment = _redact_pairs(parts.fragment)
    if netloc is parts.netloc and query is parts.query and fragment is parts.fragment:
        return text
    # Rebuilt by hand: urlunsplit would drop an empty "?" or "#" and change the text.
    out = f"{parts.scheme}:" if parts.scheme else ""
    if netloc or text[len(out) :].startswith("//"):
        out += f"//{netloc}"
    out += parts.path
    if query or "?" in text:
        out += f"?{query}"
    if fragment or "#" in text:
        out += f"#{fragment}"
    return out


def redact_headers(
    headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]],
) -> dict[str, str]:
    """The headers as a dict, with credential values replaced by ``REDACTED``.

    Accepts `httpx.Headers` (repeated headers are joined with ``", "``), any mapping, or
    ``(name, value)`` pairs. Names keep their case (httpx gives them in lowercase).

    Example:
        >>> redact_headers({"Authorization": "Bearer abc", "Accept": "application/json"})
        {'Authorization': 'REDACTED', 'Accept': 'application/json'}
    """
    items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
    result: dict[str, str] = {}
    for name, value in items:
        safe = REDACTED if is_secret_header(name) else value
        if name in result:
            result[name] = f"{result[name]}, {safe}"
        else:
            result[name] = safe
    return result

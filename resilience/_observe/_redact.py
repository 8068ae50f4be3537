"""Remove credentials from URLs and names before they reach a log, an event, a span, a
metric or a status page.

Every place the library emits or shows data goes through here: the ``url.full`` span
attribute (`redact_url`), and every name given in code or made from a URL (breaker, retry,
bulkhead and fallback names) in logs, span events, metric labels and the status endpoints
(`redact_name`). No event, log line or span carries a header, an argument, a body or an
exception message at all, so headers need no redaction rule.

URLs keep their shape (scheme, host, port, path, parameter names) so they stay useful for
debugging; only the secret parts are replaced: the userinfo becomes ``REDACTED:REDACTED``
(as the OpenTelemetry HTTP conventions ask for ``url.full``) and the value of every query
or fragment parameter whose name looks like a secret becomes ``REDACTED``.

A name "looks like a secret" by its shape, not by a list of known names: when, lower-cased
and with its separators removed, it contains a secret word anywhere (`SECRET_WORDS`:
``token``, ``secret``, ``pass``, ``auth``, ``session``, ``key``, ``sig``, ``credential``,
``cookie``, ``jwt``...). So ``accesstoken``, ``authToken``, ``client-secret``, ``pass``,
``JSESSIONID`` and ``X-Amz-Signature`` are all caught. This over-matches harmless names
(``author``, ``keyword``, ``monkey``, ``design``): redacting a harmless value costs little,
leaking a credential costs a lot. A few short words are secret only as a whole word of the
name (``sid`` in ``connect.sid``, not in ``inside``), and a few names only as a whole
(``code``, the OAuth authorization code).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote_plus, urlsplit

if TYPE_CHECKING:
    from .._http._compat import URL

__all__ = [
    "REDACTED",
    "SECRET_WORDS",
    "is_secret_parameter",
    "redact_name",
    "redact_url",
]

REDACTED: Final = "REDACTED"
"""What a secret value is replaced with."""

SECRET_WORDS: Final = (
    "auth",  # auth, authorization, oauth_*, authtoken, x-auth-*
    "bearer",
    "cookie",
    "credential",
    "csrf",
    "jwt",
    "key",  # key, apikey, api_key, secretkey, x-api-key, privatekey
    "otp",  # otp, totp: one-time passwords
    "pass",  # pass, password, passwd, passphrase, passcode
    "pwd",
    "saml",  # SAMLResponse carries a signed assertion
    "secret",
    "sessid",  # PHPSESSID
    "session",  # session, sessionid, jsessionid, sessiontoken
    "sig",  # sig, signature, x-goog-signature
    "token",  # token, accesstoken, access_token, id_token, pageToken
    "xsrf",
)
"""A parameter name containing one of these (lower-cased, without separators) is secret."""

# Too short to match inside other words ("inside", "status_code"): secret as a whole word.
_SECRET_WHOLE_WORDS: Final = frozenset({"sid", "sas"})
# Secret only as the whole name.
_SECRET_WHOLE_NAMES: Final = frozenset({"code"})

_SECRET_PATTERN: Final = re.compile("|".join(SECRET_WORDS))
_SEPARATORS: Final = re.compile(r"[^a-z0-9]+")
# Splits snake_case, kebab-case, dotted names and camelCase into words.
_WORD_BOUNDARY: Final = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# Characters that never appear in a name without a URL or query string in it.
_URL_MARKS: Final = frozenset("?#@;=")
_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+")


@lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    lowered = name.lower()
    compact = _SEPARATORS.sub("", lowered)
    if not compact:
        return False
    if _SECRET_PATTERN.search(compact) is not None or compact in _SECRET_WHOLE_NAMES:
        return True
    words = {w.lower() for w in _WORD_BOUNDARY.split(name) if w}
    return not words.isdisjoint(_SECRET_WHOLE_WORDS)


def is_secret_parameter(name: str) -> bool:
    """True if a query parameter called *name* may carry a credential.

    Example:
        >>> is_secret_parameter("api_key"), is_secret_parameter("accesstoken")
        (True, True)
        >>> is_secret_parameter("page")
        False
    """
    return _secret_name(unquote_plus(name))


_PAIR_SEPARATORS: Final = re.compile(r"([&;])")


def _redact_pairs(text: str) -> str:
    """Replace secret values in ``a=1&b=2`` or ``a=1;b=2`` (a query string or a fragment)."""
    if "=" not in text:
        return text
    parts = _PAIR_SEPARATORS.split(text)
    changed = False
    for index in range(0, len(parts), 2):  # the odd indexes are the separators
        name, sep, value = parts[index].partition("=")
        if sep and value and is_secret_parameter(name):
            parts[index] = f"{name}={REDACTED}"
            changed = True
    return "".join(parts) if changed else text


def redact_url(url: str | URL) -> str:
    """The URL as a string, without its credentials.

    The userinfo (``user:password@``) becomes ``REDACTED:REDACTED@``; values of query and
    fragment parameters with secret-looking names become ``REDACTED``; everything else is
    kept as written. A string that does not parse as a URL is replaced as a whole.

    Example:
        >>> redact_url("https://bob:hunter2@api.test/v1/items?page=2&apitoken=abc123")
        'https://REDACTED:REDACTED@api.test/v1/items?page=2&apitoken=REDACTED'
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


@lru_cache(maxsize=4096)
def _redact_name(name: str) -> str:
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), name)
    # What is left may still hold a query string of its own ("fetch?token=...").
    head, mark, tail = text.partition("?")
    return f"{head}{mark}{_redact_pairs(tail)}" if mark else text


def redact_name(name: str) -> str:
    """*name* (of a breaker, a retry, a bulkhead...) without credentials from URLs in it.

    Names are given in code, and code sometimes builds them from a URL. Most names hold no
    URL at all and come back unchanged at the cost of one set check; a URL in a name is
    redacted as `redact_url` does, and so is a bare query string.

    Example:
        >>> redact_name("payments"), redact_name("http:https://api.test:443")
        ('payments', 'http:https://api.test:443')
        >>> redact_name("GET https://u:pw@api.test/x?token=abc&page=2")
        'GET https://REDACTED:REDACTED@api.test/x?token=REDACTED&page=2'
    """
    if _URL_MARKS.isdisjoint(name):
        return name
    return _redact_name(name)

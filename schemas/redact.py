"""Credentials out of URIs before they are persisted or logged.

A URI may carry secrets: userinfo (`https://user:password@host/...`, `s3://KEY:SECRET@bucket/...`)
or signed/authorised query parameters (`?token=`, `X-Amz-Signature=`, `X-Goog-Credential=`,
`sig=` of an Azure SAS, `key=`). Identity (fingerprints, resume checks) may use the full URI;
everything written to a manifest, a settings file, a dead letter or a log line goes through
`redact_uri`, so a dataset can be shared without the keys that were used to read its inputs.

Rules (stdlib only, like the rest of `schemas/`): userinfo becomes `user:***@` (password only)
or `***@` (a lone user name is often itself a token, as in `https://TOKEN@host`); the value of a
query parameter whose name looks secret becomes `***`, every other parameter is kept as given.
Local paths are returned unchanged.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# whole parameter names (lower case) that carry secrets in common signed-URL schemes
SECRET_PARAMS = frozenset({
    "key", "api_key", "apikey", "access_key", "accesskey", "sig", "signature", "token", "password", "passwd",
    "pwd", "secret", "auth", "authorization", "credential", "credentials", "session", "code",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "awsaccesskeyid",
})
# ...and any name containing one of these words
SECRET_WORDS = ("token", "secret", "password", "passwd", "signature", "credential", "apikey", "api_key",
                "private")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter name looks like it carries a secret."""
    n = name.strip().lower()
    return n in SECRET_PARAMS or any(w in n for w in SECRET_WORDS)


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and value and is_secret_param(name) else item)
    return "&".join(parts)


def redact_query(text: str) -> str:
    """`name?query` with secret parameter values masked: for relative names of signed URLs, so that a
    rotated signature does not change an identity built on the name."""
    head, q, query = text.partition("?")
    return head + q + _redact_query(query) if q else text


def redact_uri(uri: str) -> str:
    """The URI with userinfo secrets and secret query parameter values masked (see the module doc)."""
    if not isinstance(uri, str) or not _SCHEME.match(uri):
        return uri  # a local path (or not a string): nothing to hide
    try:
        parts = urlsplit(uri)
    except ValueError:  # unparsable (e.g. a bad IPv6 literal): mask everything between :// and @
        return re.sub(r"(://)[^/@]*@", rf"\1{MASK}@", uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon and user else f"{MASK}@{host}"
    query = _redact_query(parts.query) if parts.query else parts.query
    if netloc == parts.netloc and query == parts.query:
        return uri  # untouched: keep the exact spelling (urlunsplit may normalise it)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URI inside a free-form message (an error, a log line) redacted."""
    def one(m: re.Match) -> str:
        uri = m.group(0)
        core = uri.rstrip(".,:;!?")  # sentence punctuation after a URI is not part of it
        return redact_uri(core) + uri[len(core):]

    return re.sub(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{},]+", one, text)

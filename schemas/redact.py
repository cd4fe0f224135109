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

Libraries print a URI's parts without its scheme (botocore: `Invalid bucket name "KEY:SECRET@bucket"`),
where no URI pattern can find them. So each command remembers, at start-up, the literal secrets of
every URI it was given (`remember_secrets`: the command line, then its settings), and `redact_text`
masks those strings wherever they appear; `redact_process_output` applies `redact_text` to every
log record (all loggers and handlers, exception text included) and to the traceback of an uncaught
exception, so the text of a library's exception never carries a secret we were given.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# whole parameter names (lower case) that carry secrets in common signed-URL schemes
SECRET_PARAMS = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "access_key",
        "accesskey",
        "sig",
        "signature",
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "code",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "awsaccesskeyid",
    }
)
# ...and any name containing one of these words
SECRET_WORDS = ("token", "secret", "password", "passwd", "signature", "credential", "apikey", "api_key", "private")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{},]+")
# a remembered secret this short is masked only where it sits in a URI's shape (`:S@`, `S@`, `=S`):
# masking it everywhere would garble ordinary words and numbers of a message
MIN_LITERAL = 4
_secrets: set[str] = set()  # literal secrets of the URIs this process was given (`remember_secrets`)


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
    """Every URI inside a free-form message (an error, a log line) redacted, and every remembered
    secret (`remember_secrets`) masked wherever it appears."""

    def one(m: re.Match) -> str:
        uri = m.group(0)
        core = uri.rstrip(".,:;!?")  # sentence punctuation after a URI is not part of it
        return redact_uri(core) + uri[len(core) :]

    text = _URI.sub(one, text)
    for secret in sorted(_secrets, key=len, reverse=True):  # a secret inside a longer one: the longer first
        if len(secret) >= MIN_LITERAL:
            text = text.replace(secret, MASK)
        elif secret in text:
            quoted = re.escape(secret)
            text = re.sub(rf"(?<=:){quoted}(?=@)|(?<![\w%.~:-]){quoted}(?=@)|(?<==){quoted}(?![\w%.~-])", MASK, text)
    return text


def uri_secrets(uri: str) -> set[str]:
    """The literal secrets a URI carries (what `redact_uri` masks: a userinfo password or lone user
    name, secret query parameter values), as given and %-decoded."""
    if not isinstance(uri, str) or not _SCHEME.match(uri):
        return set()
    out = set()
    netloc_query = re.match(r"[^:]*://([^/?#]*)(?:[^?#]*)(?:\?([^#]*))?", uri)
    netloc, query = netloc_query.group(1), netloc_query.group(2) or ""
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        user, colon, password = userinfo.partition(":")
        out.add(password if colon and user else userinfo)
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if eq and value and is_secret_param(name):
            out.add(value)
    return {form for s in out for form in (s, unquote(s), unquote(s.replace("+", " "))) if form and form != MASK}


def remember_secrets(*values) -> None:
    """Remember the secrets of every URI inside `values` (strings - a whole argument such as
    `key=s3://...` or `a,b` included - or lists and dicts of them: argv, a config) for `redact_text`."""
    for value in values:
        if isinstance(value, str):
            for m in _URI.finditer(value):
                _secrets.update(uri_secrets(m.group(0).rstrip(".,:;!?")))
        elif isinstance(value, dict):
            remember_secrets(*value.values())
        elif isinstance(value, (list, tuple, set)):
            remember_secrets(*value)


class RedactedRecord(logging.LogRecord):
    """A log record whose message (as every handler and formatter reads it) is redacted; `msg` and
    `args` stay as logged, so filters that look at the logged object keep working."""

    def getMessage(self) -> str:
        return redact_text(super().getMessage())


def _redacting_factory(make):
    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        if type(record) is logging.LogRecord:
            record.__class__ = RedactedRecord
        else:  # another library's record class: redact its message now
            try:
                record.msg, record.args = redact_text(record.getMessage()), None
            except Exception:  # a bad format string: logging reports it as it would have
                pass
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return record

    factory.pdistill_redacting = True
    return factory


def _redacting_excepthook():
    def excepthook(kind, value, tb):
        sys.stderr.write(redact_text("".join(traceback.format_exception(kind, value, tb))))

    excepthook.pdistill_redacting = True
    return excepthook


def redact_process_output(argv=()) -> None:
    """At a command's start: remember the secrets of its arguments, and redact every log record
    (made by any logger, for any handler) and the traceback of an uncaught exception."""
    remember_secrets(list(argv))
    if not getattr(logging.getLogRecordFactory(), "pdistill_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
    if not getattr(sys.excepthook, "pdistill_redacting", False):
        sys.excepthook = _redacting_excepthook()

"""img2dataset's free-text error messages -> short failure reasons for stats.json.

img2dataset records str(exception) per failed url (urllib, http.client, socket and its own resizer
messages); counting those verbatim would give one bucket per host or path, so they are folded here.
"""
from __future__ import annotations

import re

# (reason, pattern) checked in order; the first match wins.
_RULES: tuple[tuple[str, re.Pattern], ...] = tuple((reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in (
    ("redirect_loop", r"redirect error that would lead to an infinite loop"),
    ("timeout", r"timed out|timeout"),
    ("truncated_image", r"IncompleteRead|unexpected end|truncated|premature end"),
    ("not_an_image", r"image decoding error|cannot identify image"),
    ("too_large", r"image area too large"),
    ("too_small", r"image too small"),
    ("bad_aspect_ratio", r"aspect ratio too large"),
    ("missing_file", r"No such file or directory|file not found"),
    ("connection_refused", r"Connection refused"),
    ("dns_error", r"Name or service not known|nodename nor servname|getaddrinfo|Temporary failure in name resolution"),
    ("connection_reset", r"Connection reset|Remote end closed connection|RemoteDisconnected|BadStatusLine"),
    ("ssl_error", r"SSL|CERTIFICATE"),
    ("disallowed", r"disallowed by X-Robots-Tag"),
    ("hash_mismatch", r"hash mismatch"),
    ("unsupported_url", r"unknown url type|no host given"),
))
_HTTP = re.compile(r"HTTP Error (\d{3})")


def failure_reason(message: str | None) -> str:
    """Short reason for one img2dataset error message (http_<code> for HTTP status errors)."""
    if not message:
        return "other"
    for reason, pattern in _RULES[:1]:  # a redirect loop is reported as an "HTTP Error 30x"
        if pattern.search(message):
            return reason
    http = _HTTP.search(message)
    if http:
        return f"http_{http.group(1)}"
    for reason, pattern in _RULES[1:]:
        if pattern.search(message):
            return reason
    return "other"


def fold_status(status_dict: dict[str, int]) -> dict[str, int]:
    """img2dataset's status_dict (message -> count, with "success") -> reason -> count, without successes."""
    out: dict[str, int] = {}
    for message, count in status_dict.items():
        if message == "success":
            continue
        reason = failure_reason(message)
        out[reason] = out.get(reason, 0) + int(count)
    return out

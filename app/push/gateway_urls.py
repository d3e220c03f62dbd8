"""Push gateway URLs, parsed and compared as URLs (the allowlist MSGSYNC_PUSH_GATEWAYS).

msgsync calls a pusher's gateway URL from inside the operator's network: were any URL
accepted, any user could make it send requests anywhere (request forgery). A string-prefix
match is not enough: `https://push.example/notify/../../admin` starts with the prefix
`https://push.example/notify` yet names another path once a server resolves its dot
segments, and `https://push.example@evil.example/` or `https://push.example.evil.example/`
name other hosts. So both the operator's entries and the clients' URLs are parsed into
scheme, host, port (the scheme's default made explicit) and path segments, and a URL is
allowed when its scheme, host and port equal an entry's and its path segments begin with the
entry's. Whatever a server could read as another path or host is refused outright, rather
than normalised into something the client did not write: dot segments, percent-encoded dots,
slashes and backslashes, backslashes, userinfo, fragments, whitespace and control
characters. The operator's entries may not have a query either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["BadGatewayUrl", "GatewayUrl", "parse_allowlist", "parse_gateway_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# %2e is ".", %2f "/", %5c "\": encoded, they would let a server that decodes before
# resolving see dot segments or other separators that the comparison here did not.
_ENCODED_SEPARATORS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class BadGatewayUrl(ValueError):
    """Why a URL cannot be a gateway URL (the message is shown to the client or operator)."""


@dataclass(frozen=True, slots=True)
class GatewayUrl:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    def within(self, prefix: GatewayUrl) -> bool:
        """Whether this URL is the prefix's origin and below its path, on segment
        boundaries: /notify is not within /not, /notify/x is within /notify."""
        return (self.scheme, self.host, self.port) == (
            prefix.scheme,
            prefix.host,
            prefix.port,
        ) and self.segments[: len(prefix.segments)] == prefix.segments

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{'/'.join(self.segments)}"


def parse_gateway_url(url: str, *, allow_query: bool = True) -> GatewayUrl:
    """The URL's parts, or BadGatewayUrl saying what is wrong with it."""
    if _SPACE_OR_CONTROL.search(url):
        raise BadGatewayUrl("it contains whitespace or control characters")
    if "\\" in url:
        raise BadGatewayUrl("it contains a backslash")
    if "#" in url:
        raise BadGatewayUrl("it has a fragment (#)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or a malformed IPv6 address
        raise BadGatewayUrl(f"it is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BadGatewayUrl("it is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise BadGatewayUrl("it has a user name or password (user@host)")
    if parts.netloc.endswith(":"):
        # Not "any port", as a string prefix once read it: the scheme's default, which an
        # entry had better say outright.
        raise BadGatewayUrl("its port is empty (host: with nothing after)")
    host = parts.hostname
    if not host:
        raise BadGatewayUrl("it has no host")
    if parts.query and not allow_query:
        raise BadGatewayUrl("it has a query (?)")
    if _ENCODED_SEPARATORS.search(parts.path) or _ENCODED_SEPARATORS.search(parts.query):
        raise BadGatewayUrl("it has a percent-encoded '.', '/' or '\\' (%2e, %2f, %5c)")
    segments = parts.path.split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        raise BadGatewayUrl("its path has a '.' or '..' segment")
    # A trailing slash ends the path; it adds no segment to compare.
    if segments and segments[-1] == "":
        segments.pop()
    return GatewayUrl(scheme, host, port or _DEFAULT_PORTS[scheme], tuple(segments))


def parse_allowlist(entries: str) -> tuple[GatewayUrl, ...]:
    """MSGSYNC_PUSH_GATEWAYS, comma-separated; ValueError naming the first bad entry."""
    parsed = []
    for entry in (e.strip() for e in entries.split(",")):
        if not entry:
            continue
        try:
            parsed.append(parse_gateway_url(entry, allow_query=False))
        except BadGatewayUrl as exc:
            raise ValueError(
                f"{entry!r} is not a gateway URL prefix like "
                f"https://push.example.com/_matrix/push/v1/notify: {exc}"
            ) from None
    return tuple(parsed)

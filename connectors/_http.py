"""What the ``webhook`` connector and the ``HttpSensor`` share: the host allow-list, settings, one HTTP client.

A task names the URL, so without a check any task could make the service call anything the
service's pod can reach (cloud metadata endpoints, internal admin APIs): which hosts may be
called is the operator's decision, made in ``plugins.<key>.allowed_hosts``, and it is checked
on the exact URL object that is sent, for every hop of a redirect. The default allows nothing.

httpx is imported lazily (inside functions) so a service that never runs an HTTP task pays
neither its import time nor its memory.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from connector_service import CommaList, SharedClients, clip, get_secret
from connector_service.errors import InvalidRequestError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AllowedHosts",
    "HostRule",
    "HttpClients",
    "HttpSettings",
    "check_headers",
    "check_url",
    "connection_failed",
    "decode_text",
    "describe",
    "drain",
    "endpoint_url",
    "host_and_port",
    "not_sent",
    "parse_host_rule",
    "parse_url",
    "read_capped",
    "safe_url",
    "send",
    "with_secret_headers",
]

_log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
USER_AGENT = "flyte-connector-service"
_HARMLESS_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent"})
"""Task headers kept on a redirect to another origin; any other may carry a credential."""


@dataclass(frozen=True, slots=True)
class HostRule:
    """One ``allowed_hosts`` entry: an exact host or a ``*.`` suffix, optionally one port."""

    host: str  # lower-case; for a wildcard, the suffix without "*." (e.g. "example.com")
    wildcard: bool
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:  # names only: "*.0.0.1" must not match 127.0.0.1
            return host.endswith("." + self.host) and not _is_ip(host)
        return host == self.host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def endpoint_url(value: str) -> str:
    """An operator's endpoint override, normalised: ``http(s)://host[:port][/path]`` or "" (none).

    Refuses credentials, a query or a fragment in it: secrets come from the service's secrets,
    and a URL that silently dropped parts would reach somewhere else than the operator meant.
    """
    if not value:
        return ""
    try:
        url = urllib.parse.urlsplit(value.strip())
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment or url.username:
        raise ValueError(f"{value!r}: give http(s)://host[:port][/path], without credentials, query or fragment")
    return urllib.parse.urlunsplit(url).rstrip("/")


def parse_host_rule(entry: str) -> HostRule:
    """Parse ``host``, ``host:port``, ``*.example.com[:port]``, ``1.2.3.4[:port]``, ``[::1][:port]``.

    Anything looking like a URL, a path, a bare ``*`` or a wildcard in the middle is refused:
    an entry that silently matched nothing (or everything) would be worse than a start-up error.
    """
    text = entry.strip()
    if not text:
        raise ValueError("an empty entry")
    if "/" in text or "@" in text or "?" in text or "#" in text or any(c.isspace() for c in text):
        raise ValueError(f"{entry!r} is not a host name (give host or host:port, without scheme or path)")
    port: int | None = None
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{entry!r}: unclosed '[' in an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: expected ':port' after ']'")
            port = _parse_port(entry, rest[1:])
        try:
            return HostRule(host=ipaddress.IPv6Address(host).compressed, wildcard=False, port=port)
        except ValueError:
            raise ValueError(f"{entry!r}: {host!r} is not an IPv6 address") from None
    if text.count(":") > 1:
        raise ValueError(f"{entry!r}: write IPv6 addresses in brackets, e.g. [::1]:8080")
    host, sep, port_text = text.partition(":")
    if sep:
        port = _parse_port(entry, port_text)
    host = _normalise_host(host)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if not host or "*" in host:
        raise ValueError(f"{entry!r}: '*' is allowed only as a whole first label ('*.example.com'), not alone")
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{entry!r}: {host!r} is not a valid host name")
    if wildcard and len(labels) < 2:
        raise ValueError(f"{entry!r}: a wildcard needs at least two labels after '*.' (e.g. '*.example.com')")
    return HostRule(host=host, wildcard=wildcard, port=port)


def _parse_port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def _check_hosts(entries: list[str]) -> list[str]:
    for entry in entries:
        parse_host_rule(entry)  # raises ValueError naming the entry; pydantic adds the field
    return entries


def _check_schemes(schemes: list[str]) -> list[str]:
    normalised = [s.strip().lower() for s in schemes]
    bad = [s for s in normalised if s not in _DEFAULT_PORTS]
    if bad:
        raise ValueError(f"unsupported scheme(s) {', '.join(map(repr, bad))}: only 'http' and 'https'")
    return normalised


AllowedHosts = Annotated[CommaList, AfterValidator(_check_hosts)]
"""``allowed_hosts``: exact hosts, ``*.suffix`` wildcards, optional ``:port``; commas or a JSON list."""

Schemes = Annotated[CommaList, AfterValidator(_check_schemes)]


class HttpSettings(BaseModel):
    """Operator settings shared by the HTTP plugins; each plugin subclasses it under its own key.

    The defaults are the most restrictive: no host is allowed, only https is spoken, no
    redirect is followed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_hosts: AllowedHosts = Field(
        default_factory=list,
        description="Hosts tasks may call: 'api.example.com', 'api.example.com:8443', '*.example.com'. "
        "Empty (the default) refuses every host.",
    )
    allowed_schemes: Schemes = Field(
        default_factory=lambda: ["https"], description="URL schemes tasks may use: https (default) and/or http."
    )
    max_response_bytes: int = Field(
        1024 * 1024, gt=0, le=64 * 1024 * 1024, description="Most bytes of a response body read into memory."
    )
    default_timeout: float = Field(10.0, gt=0, le=3600, description="Request timeout when the task sets none.")
    follow_redirects: bool = Field(
        False, description="Follow redirects (each hop's host must be allowed too); off by default."
    )
    max_redirects: int = Field(5, ge=0, le=20, description="Most redirect hops followed when follow_redirects.")
    secret_headers: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Headers the service adds from its own secrets, by host rule: "
        "{'api.example.com': {'Authorization': 'api_token'}} sends get_secret('api_token') to that host "
        "only; a task cannot choose, see or override them.",
    )

    @field_validator("secret_headers")
    @classmethod
    def _check_secret_headers(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for host, headers in value.items():
            parse_host_rule(host)
            check_headers(dict.fromkeys(headers, "x"), "secret_headers", host)
            for name, key in headers.items():
                if not key:
                    raise ValueError(f"{host}: header {name!r} names an empty secret key")
        return value

    def rules(self) -> tuple[HostRule, ...]:
        return tuple(parse_host_rule(e) for e in self.allowed_hosts)

    def secret_rules(self) -> tuple[tuple[HostRule, dict[str, str]], ...]:
        return tuple((parse_host_rule(h), headers) for h, headers in self.secret_headers.items())


def with_secret_headers(headers: Mapping[str, str], url: httpx.URL, settings: HttpSettings) -> dict[str, str]:
    """The task's headers plus the operator's secret headers for ``url``'s host, which win over
    a task header of the same name (in any case). Secrets are read per call, so a rotated
    mounted secret is picked up without a restart."""
    if not settings.secret_headers:
        return dict(headers)
    host, port = host_and_port(url)
    secret: dict[str, str] = {}
    for rule, names in settings.secret_rules():
        if rule.matches(host, port):
            secret.update({name: get_secret(key) for name, key in names.items()})
    overridden = {name.lower() for name in secret}
    return {k: v for k, v in headers.items() if k.lower() not in overridden} | secret


def safe_url(url: httpx.URL | str) -> str:
    """The URL without user info, query or fragment: what may appear in logs and messages."""
    import httpx

    u = httpx.URL(url) if isinstance(url, str) else url
    host = u.host
    if ":" in host:
        host = f"[{host}]"
    port = f":{u.port}" if u.port is not None else ""
    return clip(f"{u.scheme}://{host}{port}{u.path}")


def host_and_port(url: httpx.URL) -> tuple[str, int]:
    """The host (lower-case, IDNA-encoded as DNS is asked, IPs normalised) and the effective port."""
    host = _normalise_host(url.raw_host.decode("ascii", errors="replace").strip("[]"))
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme.lower(), 0)
    return host, port


def check_url(
    url: httpx.URL, settings: HttpSettings, rules: Iterable[HostRule], key: str, who: str, field: str
) -> None:
    """Refuse a URL whose scheme or host the operator did not allow (``InvalidRequestError``).

    ``key`` is the settings key (``webhook``), ``who`` prefixes the message, ``field`` names
    where the URL came from (``custom.url``).
    """
    scheme = url.scheme.lower()
    if scheme not in settings.allowed_schemes:
        allowed = ", ".join(settings.allowed_schemes)
        raise InvalidRequestError(
            f"{who}: {field} uses scheme {scheme!r}, which is not allowed here "
            f"(plugins.{key}.allowed_schemes: {allowed})"
        )
    if not url.raw_host:
        raise InvalidRequestError(f"{who}: {field} has no host")
    host, port = host_and_port(url)
    if not any(rule.matches(host, port) for rule in rules):
        shown = f"[{host}]" if ":" in host else host
        raise InvalidRequestError(
            f"{who}: host {shown}:{port} ({field}) is not allowed; "
            f"the operator must add it to plugins.{key}.allowed_hosts"
        )


def parse_url(text: str, who: str, field: str) -> httpx.URL:
    """``httpx.URL`` of ``text``; the same object is checked and sent, so no parser can disagree."""
    import httpx

    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{who}: {field} is not a valid URL ({type(exc).__name__})") from None
    if not url.scheme:
        raise InvalidRequestError(f"{who}: {field} must be an absolute http(s) URL")
    return url


def check_headers(headers: Mapping[str, Any], who: str, field: str) -> dict[str, str]:
    """Headers as str -> str; names a bad header, never shows a value (it may be a token)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise InvalidRequestError(f"{who}: {field} has an invalid header name {str(name)[:60]!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidRequestError(f"{who}: {field}.{name} must be a string, got {type(value).__name__}")
        text = str(value)
        if any(c in text for c in "\r\n\0"):
            raise InvalidRequestError(f"{who}: {field}.{name} contains a line break or NUL")
        if not text.isascii() or any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
            raise InvalidRequestError(f"{who}: {field}.{name} must be printable ASCII (RFC 9110)")
        out[name] = text
    return out


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Never store or send a cookie: the client is shared by every task, so a cookie one task's
    response sets must not ride along on another task's request."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _RedactUrls(logging.Filter):
    """httpx logs each request's full URL at INFO, and a query string may carry a token: keep
    scheme, host and path only (the connectors log the same)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_httpx_url(a) for a in record.args):
            record.args = tuple(safe_url(str(a)) if _is_httpx_url(a) else a for a in record.args)
        return True


def _is_httpx_url(value: object) -> bool:
    cls = type(value)
    return cls.__name__ == "URL" and cls.__module__.startswith("httpx")


_redacting = _RedactUrls()


async def _make_client(_key: str) -> httpx.AsyncClient:
    import httpx

    httpx_log = logging.getLogger("httpx")
    if _redacting not in httpx_log.filters:
        httpx_log.addFilter(_redacting)

    # trust_env: honour HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE as operators expect; the
    # allow-list is checked on the target URL either way.
    return httpx.AsyncClient(
        follow_redirects=False,
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
        trust_env=True,
    )


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


class HttpClients:
    """One ``httpx.AsyncClient`` (a connection pool) for every call a plugin makes.

    Made on first use so start-up stays lean, reused by every task, closed in ``close()``.
    """

    KEY = "http"

    def __init__(self) -> None:
        self._clients: SharedClients[str, httpx.AsyncClient] = SharedClients(self._make, _close_client)
        self.made = 0
        """How many clients were made (a test checks it stays 1)."""

    async def _make(self, key: str) -> httpx.AsyncClient:
        self.made += 1
        return await _make_client(key)

    async def get(self) -> httpx.AsyncClient:
        return await self._clients.get(self.KEY)

    async def aclose(self) -> None:
        await self._clients.aclose()


def not_sent(exc: BaseException) -> bool:
    """Whether an httpx error happened before the request left (refused, DNS, connect timeout):
    then nothing can have been done by the server and trying again is safe."""
    import httpx

    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def connection_failed(exc: BaseException) -> bool:
    """Whether an httpx error means the server could not be reached or dropped the connection."""
    import httpx

    return not_sent(exc) or isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))


def describe(exc: BaseException) -> str:
    """A short reason for an httpx error, without the URL's query or any header (httpx's own
    messages may repeat the request)."""
    import httpx

    inner: BaseException = exc
    for _ in range(10):  # the innermost cause (an OSError) says why; bounded in case of a cycle
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    reasons: dict[type[BaseException], str] = {
        httpx.ConnectError: "could not connect",
        httpx.ConnectTimeout: "connecting timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.WriteTimeout: "sending timed out",
        httpx.PoolTimeout: "no free connection in time",
        httpx.RemoteProtocolError: "the server closed the connection or broke the protocol",
        httpx.ReadError: "the connection failed while reading",
        httpx.WriteError: "the connection failed while sending",
    }
    text = reasons.get(type(exc), type(exc).__name__)
    if isinstance(inner, OSError) and inner.errno and inner.errno > 0:
        text += f" ({os.strerror(inner.errno)})"  # e.g. "Connection refused"
    elif isinstance(inner, OSError) and inner.strerror:
        text += f" ({inner.strerror})"  # e.g. a DNS failure's "Name or service not known"
    return text


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    settings: HttpSettings,
    rules: Iterable[HostRule],
    key: str,
    who: str,
    field: str,
    sensitive_headers: Iterable[str] = (),
) -> httpx.Response:
    """Send ``request`` (streaming: the caller reads and closes the response).

    Redirects are followed only when the operator turned ``follow_redirects`` on, and then
    every hop is checked against the allow-list before it is sent. On a hop to another origin
    the task's own headers (``sensitive_headers``: they may carry tokens meant for the first
    host) are dropped, as httpx does for ``Authorization``.
    """
    rules = tuple(rules)
    check_url(request.url, settings, rules, key, who, field)
    origin = (request.url.scheme, request.url.raw_host, request.url.port)
    hops = settings.max_redirects if settings.follow_redirects else 0
    response = await client.send(request, stream=True, follow_redirects=False)
    while hops > 0 and response.next_request is not None:
        nxt = response.next_request
        await response.aclose()
        check_url(nxt.url, settings, rules, key, who, "a redirect's Location")
        if (nxt.url.scheme, nxt.url.raw_host, nxt.url.port) != origin:
            for name in sensitive_headers:
                if name.lower() not in _HARMLESS_HEADERS:
                    nxt.headers.pop(name, None)
        hops -= 1
        response = await client.send(nxt, stream=True, follow_redirects=False)
    return response


async def drain(response: httpx.Response, limit: int = 64 * 1024) -> None:
    """Read a small unwanted body to its end, so the connection goes back to the pool (an
    unread body makes httpx close it); a larger one is left and the connection closed."""
    try:
        await read_capped(response, limit)
    except Exception:  # the answer is already known; a broken body does not change it
        _log.debug("reading an unwanted body failed", exc_info=True)


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the (decoded) body, and whether there was more.

    Reading stops at the cap, so neither a huge body nor a compression bomb fills memory.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def decode_text(body: bytes, response: httpx.Response) -> str:
    """The body as text in the response's charset (UTF-8 when it names none or an unknown one)."""
    charset = response.charset_encoding or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")

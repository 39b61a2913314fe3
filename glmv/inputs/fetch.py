"""Turn a media reference (bytes, path, ``data:``/``file://``/``http(s)://`` URL) into bytes or a local path, safely.

Network fetches resolve the host once, refuse private/loopback/link-local/reserved addresses (unless allowed; an
IPv6 address that carries an IPv4 one, such as NAT64 64:ff9b::a.b.c.d, is judged as that IPv4 address),
connect to the address that was checked (so DNS rebinding cannot swap it), follow a few redirects re-checking
each hop, cap the size and bound the total time.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import os
import socket
import ssl
import time
import urllib.parse
from pathlib import Path

from glmv.errors import InputError, MediaTooLargeError
from glmv.inputs.limits import MediaLimits

_CHUNK = 1 << 16


def read_source(source: str | bytes | Path, limits: MediaLimits, max_bytes: int) -> bytes | Path:
    """Bytes for in-memory and remote media, a checked ``Path`` for local files (decoders stream those)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), max_bytes)
        return data
    if isinstance(source, Path):
        return _local_file(source, max_bytes)
    if not isinstance(source, str):
        raise InputError(f"unsupported media source of type {type(source).__name__}")
    scheme = source.split(":", 1)[0].lower() if ":" in source[:10] else ""
    if scheme == "data":
        return _data_url(source, max_bytes)
    if scheme in ("http", "https"):
        return fetch_url(source, limits, max_bytes)
    if scheme == "file":
        path = urllib.parse.unquote(_split_url(source)[0].path)
        return _local_file(Path(path), max_bytes, limits.allowed_dirs)
    if len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise InputError(f"unsupported URL scheme {scheme!r} (use http, https, data or file)")
    return _local_file(Path(source), max_bytes, limits.allowed_dirs)


def _check_size(n: int, max_bytes: int) -> None:
    if n > max_bytes:
        raise MediaTooLargeError(f"media is {n} bytes, over the limit of {max_bytes}")
    if n == 0:
        raise InputError("media is empty (0 bytes)")


def _local_file(path: Path, max_bytes: int, allowed_dirs: tuple[str, ...] | None = None) -> Path:
    real = Path(os.path.realpath(path))
    if allowed_dirs is not None and not any(real.is_relative_to(os.path.realpath(d)) for d in allowed_dirs):
        raise InputError(f"local file {str(path)!r} is outside the allowed directories")
    if not real.is_file():
        raise InputError(f"no such file: {str(path)!r}")
    _check_size(real.stat().st_size, max_bytes)
    return real


def _data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise InputError("malformed data: URL (no comma)")
    # Check the encoded size first so a huge payload is refused before it is decoded.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise MediaTooLargeError(f"data: URL payload is over the limit of {max_bytes} bytes")
    if header.endswith(";base64"):
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InputError(f"data: URL is not valid base64 ({e})") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    _check_size(len(data), max_bytes)
    return data


def _split_url(url: str) -> tuple[urllib.parse.SplitResult, int | None]:
    """The URL's parts and port; a bad port (99999, "abc") or IPv6 literal ("http://[::1/") is an InputError."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts, parts.port
    except ValueError as e:
        raise InputError(f"malformed URL {url!r} ({e})") from None


def _checked_address(host: str, port: int, limits: MediaLimits) -> str:
    """Resolve ``host`` and return one address that is allowed; refuse if any resolved address is not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"cannot resolve host {host!r} ({e})") from None
    addresses = [info[4][0] for info in infos]
    if not limits.allow_private_networks:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not _is_public(ip):
                raise InputError(f"URL host {host!r} resolves to a non-public address ({ip}); refused")
    return addresses[0]


# IPv6 forms whose last 32 bits are the IPv4 address a connection reaches: NAT64's well-known prefix (RFC 6052),
# IPv4-compatible ::a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d (SIIT).
_IPV4_IN_LAST_32_BITS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96"))
# NAT64 local-use prefixes (RFC 8215): each network picks where the IPv4 address goes, so none can be read out.
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is a public unicast address. An IPv6 form that carries an IPv4 destination is judged by the
    IPv4 rules: Python 3.11 calls NAT64, 6to4 and the other forms global whatever they carry (64:ff9b::a9fe:a9fe
    reaches 169.254.169.254)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL_USE:
            return False
        carried = _carried_ipv4(ip)
        if carried:
            return all(_is_public(v4) for v4 in carried)
    return ip.is_global and not ip.is_multicast


def _carried_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for: mapped, 6to4, Teredo (server and client), the forms above."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.teredo is not None:
        return ip.teredo
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if any(ip in network for network in _IPV4_IN_LAST_32_BITS):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return ()


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP connection to an already-checked address, sending the original host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_url(url: str, limits: MediaLimits, max_bytes: int) -> bytes:
    """GET ``url`` within the limits; every redirect hop is checked like the first URL."""
    deadline = time.monotonic() + limits.timeout_s
    for _ in range(limits.max_redirects + 1):
        parts, port = _split_url(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"unsupported or malformed URL {url!r}")
        port = port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, limits)
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(parts.hostname, port, address, timeout=max(0.01, deadline - time.monotonic()))
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            conn.request("GET", target, headers={"User-Agent": "glmv", "Accept": "*/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise InputError(f"redirect without a Location from {url!r}")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                raise InputError(f"fetching {url!r} returned HTTP {response.status}")
            length = response.getheader("Content-Length")
            if length and length.isdigit():
                _check_size(int(length), max_bytes)
            return _read_capped(response, max_bytes, deadline, url)
        except (TimeoutError, socket.timeout):
            raise InputError(f"fetching {url!r} timed out after {limits.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise InputError(f"fetching {url!r} failed ({e})") from None
        finally:
            conn.close()
    raise InputError(f"too many redirects fetching {url!r}")


def _read_capped(response: http.client.HTTPResponse, max_bytes: int, deadline: float, url: str) -> bytes:
    chunks, total = [], 0
    while chunk := response.read1(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise MediaTooLargeError(f"{url!r} is over the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:  # a server that trickles bytes must not hold us forever
            raise InputError(f"fetching {url!r} took too long")
        chunks.append(chunk)
    _check_size(total, max_bytes)
    return b"".join(chunks)

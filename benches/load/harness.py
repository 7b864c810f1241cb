#!/usr/bin/env python3
"""Sesame load harness: Sesame against a plain Pingora passthrough proxy and
against the peers (nginx auth_request, Caddy forward_auth), on this machine,
in one run. Started by `benches/load/run`, which installs the tools and
builds the release binaries first.

Scenarios, interleaved in every round:
  a  direct to the upstream (nginx `return 200`)
  b  plain Pingora passthrough (benches/load/passthrough.rs): the reference
  c  Sesame with a valid session cookie (1,000 signed-in people in turn)
  c0 the same with `sign_assertion = false` (no signed assertion header)
  c' Sesame answering an unauthenticated browser request (302 to the login)
  d  nginx auth_request -> Sesame /.sesame/auth -> upstream
  e  Caddy forward_auth -> Sesame /.sesame/auth -> upstream
  b1 the passthrough as a user runs it: pinned with `taskset -a` after it
     started, 32 connections, `Host: localhost:PORT`
  b1n the same with Pingora's work stealing off (as Sesame runs by default)
  c1 Sesame the same way: one session cookie, default config (assertion
     signed), `threads = 1`
  c1L (c1) with `[server] access_log` writing to a file
  cT the same with the default thread count (one per CPU the process saw
     when it started, all of them then pinned to the one CPU)

The system under test is pinned to CPU 0, the load generator and the
upstream to CPU 1. Throughput: wrk (closed loop). Latency: oha at fixed
rates (25/50/75 % of (b)'s maximum in the same round) with latency
correction. CPU per request: utime+stime of the system under test over the
requests served. Memory: peak RSS at 1,000 kept-alive connections, with
100,000 live sessions in the store, all used during the run. Instructions
per request (repeatable, whatever else the machine does): valgrind's
callgrind over 2,000 kept-alive requests after 300 to warm up, for (b),
(c1), the same without the assertion, and the forward-auth check; and
scaling with work, the same count for (c1) with 1, 10 and 100 path rules on
its site and with 1, 10 and 50 sites.

Writes benches/load/results/{results.md,raw.json,latency.svg}.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "benches", "load", "results")
RELEASE = os.path.join(ROOT, "target", "release")
SESAME = os.path.join(RELEASE, "sesame")
PASSTHROUGH = os.path.join(RELEASE, "examples", "passthrough")
SEED = os.path.join(RELEASE, "examples", "load_seed")
TICKS = os.sysconf("SC_CLK_TCK")

SCENARIOS = ["b", "a", "c", "c0", "c'", "d", "e", "b1", "b1n", "c1", "c1L", "cT"]
NAMES = {
    "a": "direct to the upstream",
    "b": "plain Pingora passthrough",
    "c": "Sesame, signed in (cookie)",
    "c0": "the same, site with sign_assertion = false",
    "c'": "Sesame, not signed in (302)",
    "d": "nginx auth_request + Sesame",
    "e": "Caddy forward_auth + Sesame",
    "b1": "plain Pingora, as a user runs it (pinned after start, 32 connections, Host with port)",
    "b1n": "the same, Pingora's work stealing off",
    "c1": "Sesame the same way, one session, default config, threads = 1",
    "c1L": "(c1) with the access log on (a file)",
    "cT": "the same, default threads (pinned to one CPU after start)",
}
# The scenarios set up as a user would, compared with (b1) rather than (b).
USER_SETUP = {"b1", "b1n", "c1", "c1L", "cT"}
CONNS = {name: 32 for name in USER_SETUP}
LOAD_FRACTIONS = [0.25, 0.5, 0.75]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=15.0):
    t = time.time()
    while time.time() - t < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def cpu_ticks(pids):
    """utime + stime of the processes (all threads), in clock ticks."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def core_times(core):
    """(busy, total) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return sum(v) - idle, sum(v)
    raise RuntimeError(f"cpu{core} not in /proc/stat")


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def rss_parts(pid):
    """Resident memory now: anonymous (the heap, stacks: memory the process
    costs) and file-backed (mostly the executable's code, shared with the
    page cache and reclaimable), in bytes."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile", "RssShmem"):
                parts[key] = int(line.split()[1]) * 1024
    return parts


def clear_refs(pid):
    """Forget which pages were touched, so `code_touched` counts from now."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("1")


def code_touched(pid, exe):
    """Bytes of `exe`'s mappings touched since `clear_refs`: the code the
    process ran (at page granularity), rather than all it keeps mapped."""
    total, current = 0, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split()
            if not first[0].endswith(":"):
                current = first[5] if len(first) > 5 else None
            elif first[0] == "Referenced:" and current == exe:
                total += int(first[1]) * 1024
    return total


def children(pid):
    """Worker processes of a master (nginx)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class Procs:
    """Processes of one scenario, stopped together."""

    def __init__(self, work, cores):
        self.work = work
        self.cores = cores
        self.procs = []

    def start(self, name, cmd, core, env=None):
        """Start `cmd` on `core`; `core=None`: anywhere (pin it later)."""
        logf = open(os.path.join(self.work, f"{name}.log"), "ab")
        full = (["taskset", "-c", core] if core is not None else []) + cmd
        p = subprocess.Popen(
            full,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


def pin_all(pid, core):
    """Move every thread of a running process to `core` (`taskset -a`)."""
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


def nginx_conf(work, name, listen, body, core_workers=1):
    prefix = os.path.join(work, f"nginx-{name}")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"""worker_processes {core_workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
{body}
}}
"""
        )
    return prefix, conf


class Rig:
    """Ports, configs and the seeded store shared by every round."""

    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="sesame-load-")
        self.cores = ("0", "1") if os.cpu_count() >= 2 else ("0", "0")
        self.sut, self.gen = self.cores
        self.up_port = free_port()
        self.b_port = free_port()
        self.s_port = free_port()
        self.s_admin = free_port()
        self.n_port = free_port()
        self.caddy_port = free_port()
        self.sesame_conf = os.path.join(self.work, "sesame.toml")
        with open(self.sesame_conf, "w") as f:
            f.write(
                f"""[server]
listen = ["127.0.0.1:{self.s_port}"]
admin_listen = "127.0.0.1:{self.s_admin}"
threads = 1
trusted_proxies = ["127.0.0.1"]
[store]
url = "sqlite://{self.work}/sesame.db"
[mail]
transport = "console"
[[site]]
name = "app"
public_url = "http://127.0.0.1"
upstream = ["127.0.0.1:{self.up_port}"]
"""
            )
        # The same store and keys, the site without the signed assertion.
        self.sesame_conf_plain = os.path.join(self.work, "sesame-plain.toml")
        with open(self.sesame_conf) as f, open(self.sesame_conf_plain, "w") as g:
            g.write(f.read() + "sign_assertion = false\n")
        # As a user runs it: the site on `localhost`, default config, its
        # own store with one signed-in person; threads 1 and the default.
        self.u_port = free_port()
        user = f"""[server]
listen = ["127.0.0.1:{self.u_port}"]
admin_listen = "127.0.0.1:{free_port()}"
{{threads}}[store]
url = "sqlite://{self.work}/sesame-user.db"
[mail]
transport = "console"
[[site]]
name = "app"
public_url = "http://localhost"
upstream = ["127.0.0.1:{self.up_port}"]
"""
        self.user_conf = {}
        for name, threads, extra in (
            ("c1", "threads = 1\n", ""),
            ("c1L", f'threads = 1\naccess_log = "{self.work}/access-c1L.log"\n', ""),
            ("cT", "", ""),
            ("c1n", "threads = 1\n", "sign_assertion = false\n"),
        ):
            self.user_conf[name] = os.path.join(self.work, f"sesame-{name}.toml")
            with open(self.user_conf[name], "w") as f:
                f.write(user.replace("{threads}", threads) + extra)
        # Scaling with work: the (c1) setup with N path rules on its site (a
        # request under none of them, so every rule is looked at), or N
        # sites (the request for the last one, as a lookup finds it last);
        # each with its own store and one session.
        self.scale = {}
        upstream = f'upstream = ["127.0.0.1:{self.up_port}"]\n'
        for n in SCALE_RULES:
            rules = "".join(f'[[site.rule]]\npath = "/area{i}"\nallow_groups = ["staff"]\n' for i in range(n))
            self.scale_setup(f"rules{n}", '[[site]]\nname = "app"\npublic_url = "http://localhost"\n' + upstream + rules, 0, "localhost")
        for n in SCALE_SITES:
            sites = "".join(f'[[site]]\nname = "app {i}"\npublic_url = "http://s{i}.localhost"\n' + upstream for i in range(n))
            self.scale_setup(f"sites{n}", sites, n - 1, f"s{n - 1}.localhost")
        user_cookie = os.path.join(self.work, "cookie-user.txt")
        subprocess.run([SEED, self.user_conf["c1"], "1", user_cookie], check=True)
        with open(user_cookie) as f:
            self.user_cookie = f.read().splitlines()[0]
        self.cookies_all = os.path.join(self.work, "cookies.txt")
        self.cookies_hot = os.path.join(self.work, "cookies-1000.txt")
        n = args.sessions
        log(f"seeding {n} users with a live session each")
        t = time.time()
        subprocess.run([SEED, self.sesame_conf, str(n), self.cookies_all], check=True)
        log(f"seeded in {time.time() - t:.1f}s")
        with open(self.cookies_all) as f:
            lines = f.read().splitlines()
        with open(self.cookies_hot, "w") as f:
            f.write("\n".join(lines[:1000]) + "\n")
        self.one_cookie = lines[0]
        self.lua = os.path.join(self.work, "cookies.lua")
        with open(self.lua, "w") as f:
            f.write(
                """-- Each request carries the next session cookie of the file in COOKIES.
local cookies = {}
for line in io.lines(os.getenv("COOKIES")) do cookies[#cookies + 1] = line end
local i = 0
request = function()
  i = i % #cookies + 1
  return wrk.format("GET", "/", { ["Cookie"] = cookies[i] })
end
"""
            )
        self.upstream = None

    def scale_setup(self, name, sites, site_index, host):
        conf = os.path.join(self.work, f"sesame-{name}.toml")
        with open(conf, "w") as f:
            f.write(
                f"""[server]
listen = ["127.0.0.1:{self.u_port}"]
admin_listen = "127.0.0.1:{free_port()}"
threads = 1
[store]
url = "sqlite://{self.work}/sesame-{name}.db"
[mail]
transport = "console"
"""
                + sites
            )
        out = os.path.join(self.work, f"cookie-{name}.txt")
        subprocess.run([SEED, conf, "1", out, str(site_index)], check=True, capture_output=True)
        with open(out) as f:
            cookie = f.read().splitlines()[0]
        self.scale[name] = {"conf": conf, "cookie": cookie, "host": host}

    def start_upstream(self):
        body = f"""    server {{
        listen 127.0.0.1:{self.up_port} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}"""
        prefix, conf = nginx_conf(self.work, "upstream", self.up_port, body)
        self.upstream = Procs(self.work, self.cores)
        p = self.upstream.start("upstream", ["nginx", "-p", prefix, "-c", conf], self.gen)
        wait_port(self.up_port, p)

    def start_sesame(self, procs, conf=None):
        p = procs.start(
            "sesame",
            [SESAME, "run", "-c", conf or self.sesame_conf],
            self.sut,
            env={"RUST_LOG": "warn"},
        )
        wait_port(self.s_port, p)
        return p

    def user_headers(self):
        return [f"Host: localhost:{self.u_port}", f"Cookie: {self.user_cookie}"]

    def scenario(self, name):
        """Start scenario `name`; (procs, url, headers, lua cookies file, SUT pids)."""
        procs = Procs(self.work, self.cores)
        if name == "a":
            return procs, f"http://127.0.0.1:{self.up_port}/", [], None, []
        if name == "b":
            p = procs.start(
                "passthrough",
                [PASSTHROUGH, f"127.0.0.1:{self.b_port}", f"127.0.0.1:{self.up_port}", "1"],
                self.sut,
            )
            wait_port(self.b_port, p)
            return procs, f"http://127.0.0.1:{self.b_port}/", [], None, [p.pid]
        if name == "bn":
            p = procs.start(
                "passthrough",
                [PASSTHROUGH, f"127.0.0.1:{self.b_port}", f"127.0.0.1:{self.up_port}", "1", "nosteal"],
                self.sut,
            )
            wait_port(self.b_port, p)
            return procs, f"http://127.0.0.1:{self.b_port}/", [], None, [p.pid]
        if name in ("b1", "b1n"):
            p = procs.start(
                "passthrough",
                [PASSTHROUGH, f"127.0.0.1:{self.u_port}", f"127.0.0.1:{self.up_port}", "1"]
                + (["nosteal"] if name == "b1n" else []),
                None,
            )
            wait_port(self.u_port, p)
            pin_all(p.pid, self.sut)
            return procs, f"http://127.0.0.1:{self.u_port}/", self.user_headers(), None, [p.pid]
        if name in ("c1", "c1L", "cT"):
            p = procs.start(
                "sesame",
                [SESAME, "run", "-c", self.user_conf[name]],
                None,
                env={"RUST_LOG": "warn"},
            )
            wait_port(self.u_port, p)
            pin_all(p.pid, self.sut)
            return procs, f"http://127.0.0.1:{self.u_port}/", self.user_headers(), None, [p.pid]
        s = self.start_sesame(procs, self.sesame_conf_plain if name == "c0" else None)
        if name in ("c", "c0"):
            return (
                procs,
                f"http://127.0.0.1:{self.s_port}/",
                [f"Cookie: {self.one_cookie}"],
                self.cookies_hot,
                [s.pid],
            )
        if name == "c'":
            return (
                procs,
                f"http://127.0.0.1:{self.s_port}/",
                ["Accept: text/html"],
                None,
                [s.pid],
            )
        if name == "d":
            body = f"""    upstream sesame {{ server 127.0.0.1:{self.s_port}; keepalive 64; }}
    upstream app {{ server 127.0.0.1:{self.up_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{self.n_port} backlog=4096;
        location = /_sesame_auth {{
            internal;
            proxy_pass http://sesame/.sesame/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            # As conf/examples/nginx.conf: the site's host (the one of the
            # seeded cookies), the path and method, the other family empty.
            proxy_set_header X-Forwarded-Host 127.0.0.1;
            proxy_set_header X-Forwarded-Uri $request_uri;
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Original-Host "";
            proxy_set_header X-Original-URI "";
            proxy_set_header X-Original-Method "";
        }}
        location / {{
            auth_request /_sesame_auth;
            auth_request_set $sesame_user $upstream_http_remote_user;
            auth_request_set $sesame_email $upstream_http_remote_email;
            proxy_set_header Remote-User $sesame_user;
            proxy_set_header Remote-Email $sesame_email;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
    }}"""
            prefix, conf = nginx_conf(self.work, "auth", self.n_port, body)
            n = procs.start("nginx-auth", ["nginx", "-p", prefix, "-c", conf], self.sut)
            wait_port(self.n_port, n)
            pids = [s.pid, n.pid] + children(n.pid)
            return (
                procs,
                f"http://127.0.0.1:{self.n_port}/",
                [f"Cookie: {self.one_cookie}"],
                self.cookies_hot,
                pids,
            )
        if name == "e":
            caddyfile = os.path.join(self.work, "Caddyfile")
            with open(caddyfile, "w") as f:
                f.write(
                    f"""{{
	admin off
	auto_https off
}}
http://127.0.0.1:{self.caddy_port} {{
	forward_auth 127.0.0.1:{self.s_port} {{
		uri /.sesame/auth
		copy_headers Remote-User Remote-Email
	}}
	reverse_proxy 127.0.0.1:{self.up_port}
}}
"""
                )
            c = procs.start(
                "caddy",
                ["caddy", "run", "--config", caddyfile, "--adapter", "caddyfile"],
                self.sut,
                env={"GOMAXPROCS": "1", "HOME": self.work, "XDG_DATA_HOME": self.work},
            )
            wait_port(self.caddy_port, c)
            return (
                procs,
                f"http://127.0.0.1:{self.caddy_port}/",
                [f"Cookie: {self.one_cookie}"],
                self.cookies_hot,
                [s.pid, c.pid],
            )
        raise ValueError(name)


def wrk(rig, url, headers, lua, seconds, conns):
    cmd = ["taskset", "-c", rig.gen, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    env = dict(os.environ)
    if lua:
        cmd += ["-s", rig.lua]
        env["COOKIES"] = lua
    else:
        for h in headers:
            cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(m.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "rps": rps,
        "non_2xx_3xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def oha(rig, url, headers, rate, seconds):
    cmd = [
        "taskset", "-c", rig.gen, "oha", "--no-tui", "--output-format", "json",
        "-z", f"{seconds}s", "-q", str(int(rate)), "-c", "32", "--latency-correction",
        "--redirect", "0",
    ]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    p = j["latencyPercentiles"]
    return {
        "rate": int(rate),
        "rps": j["summary"]["requestsPerSec"],
        "success": j["summary"]["successRate"],
        "p50": p["p50"],
        "p90": p["p90"],
        "p99": p["p99"],
        "p99.9": p["p99.9"],
        "statuses": j.get("statusCodeDistribution", {}),
    }


def expected_status_ok(name, result):
    """c' answers 302 (counted as a 3xx by wrk, fine); everything else 200."""
    return result["non_2xx_3xx"] == 0


def run_round(rig, rnd, b_max_hint):
    out = {}
    b_max = b_max_hint
    b1_max = b_max_hint
    for name in SCENARIOS:
        procs, url, headers, lua, pids = rig.scenario(name)
        try:
            # Warm up: connections, caches, every session of the cookie file.
            conns = CONNS.get(name, 64)
            wrk(rig, url, headers, lua, rig.args.warmup, conns)
            c0 = cpu_ticks(pids) if pids else 0
            g0 = core_times(rig.gen)
            w = wrk(rig, url, headers, lua, rig.args.duration, conns)
            g1 = core_times(rig.gen)
            c1 = cpu_ticks(pids) if pids else 0
            gen_busy = (g1[0] - g0[0]) / max(1, g1[1] - g0[1])
            w["gen_core_busy"] = gen_busy
            w["saturated_generator"] = gen_busy > 0.97
            w["cpu_us_per_req"] = (
                (c1 - c0) / TICKS * 1e6 / w["requests"] if pids and w["requests"] else None
            )
            w["status_ok"] = expected_status_ok(name, w)
            if name == "b":
                b_max = w["rps"]
            if name == "b1":
                b1_max = w["rps"]
            base_max = b1_max if name in USER_SETUP else b_max
            lat = []
            for frac in LOAD_FRACTIONS:
                lat.append({"fraction": frac, **oha(rig, url, headers, frac * base_max, rig.args.latency_duration)})
            w["latency"] = lat
            out[name] = w
            log(
                f"round {rnd} {name:2} {w['rps']:9.0f} req/s"
                + (f"  cpu {w['cpu_us_per_req']:.2f} us/req" if w["cpu_us_per_req"] else "")
                + f"  generator core {gen_busy:.0%}"
                + f"  p50@50% {lat[1]['p50'] * 1e6:.0f} us  p99@50% {lat[1]['p99'] * 1e6:.0f} us"
            )
        finally:
            procs.stop()
    return out, b_max


MEMORY_RUNS = {
    "b": "plain Pingora passthrough",
    "bn": "the same, Pingora's work stealing off (as Sesame runs)",
    "c": "Sesame, 1,000 of the sessions in use",
    "c_all": "Sesame, every session in use (all cached)",
}


def memory(rig):
    """Peak RSS at 1,000 kept-alive connections with every seeded session in
    the store: (b); (c) with 1,000 people active; (c) with all of them active
    within the cache lifetime (each cached with its signed assertion)."""
    res = {}
    for run in MEMORY_RUNS:
        name = "c" if run.startswith("c") else run
        procs, url, headers, lua, pids = rig.scenario(name)
        try:
            exe = PASSTHROUGH if name.startswith("b") else SESAME
            if run == "c_all":
                lua = rig.cookies_all
                # One pass over every session first (cold: each is read from the store).
                wrk(rig, url, headers, lua, max(rig.args.duration, 20), 1000)
            clear_refs(pids[0])
            w = wrk(rig, url, headers, lua, rig.args.duration, 1000)
            res[run] = {
                "peak_rss": peak_rss(pids[0]),
                **rss_parts(pids[0]),
                "code_touched": code_touched(pids[0], exe),
                "rps_at_1000_conns": w["rps"],
                "non_2xx_3xx": w["non_2xx_3xx"],
            }
            log(
                f"memory {run}: peak RSS {res[run]['peak_rss'] / 2**20:.1f} MiB at 1000 connections"
                f" (anonymous {res[run]['RssAnon'] / 2**20:.1f}, file {res[run]['RssFile'] / 2**20:.1f},"
                f" code run {res[run]['code_touched'] / 2**20:.1f})"
            )
        finally:
            procs.stop()
    return res


SCALE_RULES = [1, 10, 100]
SCALE_SITES = [1, 10, 50]
INSTR_RUNS = {
    "b": "(b) plain Pingora passthrough",
    "c1": "(c1) Sesame, signed in",
    "c1n": "the same, sign_assertion = false",
    "c1L": "(c1) with the access log on (a file)",
    "auth": "forward-auth check (`/.sesame/auth` with the session, as nginx asks)",
}
INSTR_RUNS.update({f"rules{n}": f"(c1) with {n} path rule{'s' if n > 1 else ''} on the site" for n in SCALE_RULES})
INSTR_RUNS.update({f"sites{n}": f"(c1) with {n} site{'s' if n > 1 else ''}, the last one asked" for n in SCALE_SITES})


def keepalive_requests(port, path, headers, n):
    """`n` GETs on one kept-alive connection; every answer must be a 200."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path} on port {port} answered {r.status}")
    c.close()


def rig_scale_runs():
    return {f"rules{n}" for n in SCALE_RULES} | {f"sites{n}" for n in SCALE_SITES}


def instructions(rig):
    """Instructions per request of one request type, under callgrind: the
    same count for the same binary and input, however busy the machine."""
    out = {}
    for run in INSTR_RUNS:
        scale = rig.scale.get(run)
        if run == "b":
            cmd = [PASSTHROUGH, f"127.0.0.1:{rig.u_port}", f"127.0.0.1:{rig.up_port}", "1"]
        elif scale:
            cmd = [SESAME, "run", "-c", scale["conf"]]
        else:
            cmd = [SESAME, "run", "-c", rig.user_conf[run if run in ("c1n", "c1L") else "c1"]]
        dump = os.path.join(rig.work, f"callgrind.{run}")
        procs = Procs(rig.work, rig.cores)
        p = procs.start(
            f"callgrind-{run}",
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}"] + cmd,
            rig.sut,
            env={"RUST_LOG": "warn"},
        )
        try:
            wait_port(rig.u_port, p, timeout=120)
            headers = {"Host": f"{scale['host'] if scale else 'localhost'}:{rig.u_port}"}
            path = "/"
            if scale:
                headers["Cookie"] = scale["cookie"]
            elif run != "b":
                headers["Cookie"] = rig.user_cookie
            if run == "auth":
                path = "/.sesame/auth"
                headers["X-Original-URI"] = "/"
            keepalive_requests(rig.u_port, path, headers, 300)
            subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
            keepalive_requests(rig.u_port, path, headers, 2000)
            subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
            with open(f"{dump}.1") as f:
                total = next(int(l.split()[1]) for l in f if l.startswith("summary:"))
            out[run] = total // 2000
            log(f"instructions {run}: {out[run]:,} per request")
        finally:
            procs.stop()
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def summarize(rounds, mem):
    s = {}
    for name in SCENARIOS:
        runs = [r[name] for r in rounds if name in r]
        kept = [r for r in runs if not r["saturated_generator"]]
        use = kept or runs
        lat = {}
        for i, frac in enumerate(LOAD_FRACTIONS):
            lat[frac] = {
                k: med([r["latency"][i][k] for r in runs]) for k in ["p50", "p90", "p99", "p99.9", "rps"]
            }
        s[name] = {
            "rps": med([r["rps"] for r in use]),
            "rps_spread": spread([r["rps"] for r in use]),
            "rounds_kept": len(kept),
            "rounds": len(runs),
            "cpu_us_per_req": med([r["cpu_us_per_req"] for r in use]),
            "status_ok": all(r["status_ok"] for r in runs),
            "latency": lat,
        }
    return s


def us(x):
    return "-" if x is None else f"{x * 1e6:.0f}"


def report(args, rounds, mem, s, started, instr=None):
    b = s["b"]
    lines = []
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name:[ ]*//p' | head -1"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines.append("# Sesame load harness: results\n")
    lines.append(
        f"Run {started} on {os.cpu_count()} CPUs ({cpu or 'unknown CPU'}), kernel {os.uname().release}, commit `{commit}`, "
        f"with `benches/load/run{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`. "
        f"{len(rounds)} rounds, interleaved; medians, spread in brackets. System under test on CPU {0}, "
        f"wrk/oha and the upstream (nginx `return 200`) on CPU 1. Ratios are against (b), the plain Pingora passthrough.\n"
    )
    lines.append("## Throughput (wrk, 64 connections, closed loop)\n")
    def table(names, base, base_name):
        lines.append(f"| | scenario | req/s | spread | vs ({base_name}) | CPU µs/req | added CPU vs ({base_name}) | rounds kept |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name in names:
            x = s[name]
            lo, hi = x["rps_spread"]
            ratio = x["rps"] / base["rps"] if base["rps"] else 0
            cpu_s = "-" if x["cpu_us_per_req"] is None else f"{x['cpu_us_per_req']:.2f}"
            added = (
                "-" if x["cpu_us_per_req"] is None or name in ("a", "b", "b1", "b1n")
                else f"{x['cpu_us_per_req'] - base['cpu_us_per_req']:+.2f}"
            )
            lines.append(
                f"| ({name}) | {NAMES[name]} | {x['rps']:.0f} | {lo:.0f}–{hi:.0f} | {ratio:.3f} | {cpu_s} | {added} | {x['rounds_kept']}/{x['rounds']} |"
            )

    table([n for n in SCENARIOS if n not in USER_SETUP], b, "b")
    lines.append(
        "\nA round is not kept when the generator's CPU was over 97 % busy (the generator, not the system under test, "
        "was the limit); (a) always shares that CPU with its upstream and is context only.\n"
    )
    lines.append("## As a user runs it (wrk, 32 connections, one session, `Host: localhost:PORT`, pinned with `taskset -a` after start)\n")
    b1 = s["b1"]
    table([n for n in SCENARIOS if n in USER_SETUP], b1, "b1")
    lines.append("")
    if instr:
        lines.append("## Instructions per request (callgrind, 2,000 kept-alive requests after 300, one session, threads = 1)\n")
        lines.append("| run | instructions/request | vs (b) | added vs (b) |")
        lines.append("|---|---|---|---|")
        ib = instr["b"]
        for k, label in INSTR_RUNS.items():
            if k in rig_scale_runs():
                continue
            lines.append(f"| {label} | {instr[k]:,} | {instr[k] / ib:.3f} | {instr[k] - ib:+,} |")
        lines.append("")
        lines.append("## Scaling with work (callgrind, as above: the (c1) setup, its site with N path rules, or N sites)\n")
        lines.append("| run | instructions/request | vs 1 | added vs 1 |")
        lines.append("|---|---|---|---|")
        for kind, ns in (("rules", SCALE_RULES), ("sites", SCALE_SITES)):
            one = instr[f"{kind}{ns[0]}"]
            for n in ns:
                k = f"{kind}{n}"
                lines.append(f"| {INSTR_RUNS[k]} | {instr[k]:,} | {instr[k] / one:.3f} | {instr[k] - one:+,} |")
        lines.append("")
    lines.append("## Latency (oha, fixed rate, latency correction)\n")
    lines.append("| | scenario | load | p50 µs | p90 µs | p99 µs | p99.9 µs | added p50 vs (b) | added p99 vs (b) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name in SCENARIOS:
        for frac in LOAD_FRACTIONS:
            l = s[name]["latency"][frac]
            bl = (b1 if name in USER_SETUP else b)["latency"][frac]
            lines.append(
                f"| ({name}) | {NAMES[name]} | {frac:.0%} of ({'b1' if name in USER_SETUP else 'b'}) | {us(l['p50'])} | {us(l['p90'])} | {us(l['p99'])} | {us(l['p99.9'])} | "
                + ("-" if name in ("a", "b", "b1") else f"{(l['p50'] - bl['p50']) * 1e6:+.0f}")
                + " | "
                + ("-" if name in ("a", "b", "b1") else f"{(l['p99'] - bl['p99']) * 1e6:+.0f}")
                + " |"
            )
    lines.append("\n![latency percentiles at 50 % load](latency.svg)\n")
    lines.append(f"## Memory (peak RSS, 1,000 kept-alive connections, {args.sessions:,} live sessions in the store)\n")
    lines.append(
        "| | peak RSS | vs (b) | anonymous | vs (b) | file-backed | code run | req/s at 1,000 connections |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    mib = lambda x: f"{x / 2**20:.1f} MiB"
    for run, label in MEMORY_RUNS.items():
        m, b = mem[run], mem["b"]
        lines.append(
            f"| {label} | {mib(m['peak_rss'])} | {(m['peak_rss'] - b['peak_rss']) / 2**20:+.1f} MiB"
            f" | {mib(m['RssAnon'])} | {(m['RssAnon'] - b['RssAnon']) / 2**20:+.1f} MiB"
            f" | {mib(m['RssFile'])} | {mib(m['code_touched'])} | {m['rps_at_1000_conns']:.0f} |"
        )
    lines.append(
        "\nAnonymous and file-backed are the resident memory at the end of the run; file-backed is"
        " nearly all the executable's code, shared with the page cache and given back under memory"
        " pressure. Code run is the part of the executable touched during the run (pages referenced"
        " after the counts were cleared at its start): what serving requests needs, against the"
        " file-backed pages that start-up left mapped.\n"
    )
    def vs(name, base):
        return s[name]["rps"] / s[base]["rps"] if s[base]["rps"] else 0

    def added(name, base):
        return s[name]["cpu_us_per_req"] - s[base]["cpu_us_per_req"]

    pairs = [("c", "b"), ("c0", "b"), ("c1", "b1"), ("cT", "b1")]
    goals = [(f"({n}) throughput >= 0.90 of ({m})", vs(n, m) >= 0.90, f"{vs(n, m):.3f}") for n, m in pairs]
    goals += [
        (f"({n}) CPU per request <= ({m}) + 5 µs", added(n, m) <= 5, f"{added(n, m):+.2f} µs") for n, m in pairs
    ]
    goals += [
        ("(c1L) throughput >= 0.95 of (c1) (the access log's cost)", vs("c1L", "c1") >= 0.95, f"{vs('c1L', 'c1'):.3f}"),
        ("(c) >= 2x the throughput of (d)", vs("c", "d") >= 2, f"{vs('c', 'd'):.2f}x"),
        ("(c) >= 2x the throughput of (e)", vs("c", "e") >= 2, f"{vs('c', 'e'):.2f}x"),
        (
            "RSS of (c) <= (b) + 10 MiB (1,000 connections, sessions in the store, 1,000 in use)",
            mem["c"]["peak_rss"] <= mem["b"]["peak_rss"] + 10 * 2**20,
            f"{(mem['c']['peak_rss'] - mem['b']['peak_rss']) / 2**20:+.1f} MiB",
        ),
        (
            "(context, not the goal) anonymous memory of (c) <= (b) + 10 MiB",
            mem["c"]["RssAnon"] <= mem["b"]["RssAnon"] + 10 * 2**20,
            f"{(mem['c']['RssAnon'] - mem['b']['RssAnon']) / 2**20:+.1f} MiB",
        ),
    ]
    if instr:
        for kind, ns in (("rules", SCALE_RULES), ("sites", SCALE_SITES)):
            one, most = instr[f"{kind}{ns[0]}"], instr[f"{kind}{ns[-1]}"]
            goals.append(
                (f"cost flat: {INSTR_RUNS[kind + str(ns[-1])]} within 5 % of 1 (instructions)", most <= one * 1.05, f"{most / one:.3f}")
            )
    lines.append("\n## Goals (issue 14)\n")
    lines.append("| goal | result | met |")
    lines.append("|---|---|---|")
    for g, ok, v in goals:
        lines.append(f"| {g} | {v} | {'yes' if ok else 'no'} |")
    for i, r in enumerate(rounds, 1):
        for name, w in r.items():
            if not w["status_ok"]:
                lines.append(
                    f"\n**Warning:** ({name}) answered {w['non_2xx_3xx']:,} requests with neither 2xx nor 3xx "
                    f"in round {i}: its row measures those answers, not the scenario."
                )
    return "\n".join(lines) + "\n", goals


def plot(s, path):
    data = os.path.join(os.path.dirname(path), "latency.dat")
    with open(data, "w") as f:
        f.write("scenario p50 p90 p99 p99.9\n")
        for name in SCENARIOS:
            l = s[name]["latency"][0.5]
            f.write(f"\"({name})\" " + " ".join(f"{l[k] * 1e6:.1f}" for k in ["p50", "p90", "p99", "p99.9"]) + "\n")
    script = f"""set terminal svg size 900,480 dynamic font "sans,12"
set output "{path}"
set title "Latency at 50 % of (b)'s maximum (oha, latency-corrected)"
set ylabel "µs (log scale)"
set logscale y
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
plot "{data}" using 2:xtic(1) title "p50", "" using 3 title "p90", "" using 4 title "p99", "" using 5 title "p99.9"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds of each wrk measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--latency-duration", type=int, default=5, help="seconds of each oha run")
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="1 round, short runs, 10k sessions (a smoke test)")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-RSS runs, printed, results/ left as is")
    ap.add_argument(
        "--instructions-only", action="store_true", help="only the callgrind counts, printed, results/ left as is"
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.latency_duration, args.sessions = 1, 3, 1, 2, 10_000
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rig = Rig(args)
    rig.start_upstream()
    if args.memory_only or args.instructions_only:
        # One kind of measurement alone: printed, results/ left as is.
        try:
            got = memory(rig) if args.memory_only else instructions(rig)
        finally:
            rig.upstream.stop()
        for run, m in got.items():
            if args.memory_only:
                print(
                    f"{MEMORY_RUNS[run]}: peak {m['peak_rss'] / 2**20:.1f} MiB (anonymous {m['RssAnon'] / 2**20:.1f},"
                    f" file {m['RssFile'] / 2**20:.1f}, code run {m['code_touched'] / 2**20:.1f}),"
                    f" {m['rps_at_1000_conns']:.0f} req/s"
                )
            else:
                print(f"{INSTR_RUNS[run]}: {m:,} instructions/request ({m / got['b']:.3f} of (b))")
        shutil.rmtree(rig.work, ignore_errors=True)
        return
    try:
        rounds = []
        b_max = None
        for rnd in range(1, args.rounds + 1):
            r, b_max = run_round(rig, rnd, b_max)
            rounds.append(r)
        mem = memory(rig)
        instr = instructions(rig)
    finally:
        if rig.upstream:
            rig.upstream.stop()
    s = summarize(rounds, mem)
    os.makedirs(RESULTS, exist_ok=True)
    md, goals = report(args, rounds, mem, s, started, instr)
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(RESULTS, "raw.json"), "w") as f:
        json.dump({"started": started, "args": vars(args), "rounds": rounds, "memory": mem, "instructions": instr, "summary": {k: {**v, "latency": {str(f): l for f, l in v["latency"].items()}} for k, v in s.items()}}, f, indent=1)
    plot(s, os.path.join(RESULTS, "latency.svg"))
    print(md)
    shutil.rmtree(rig.work, ignore_errors=True)


if __name__ == "__main__":
    main()

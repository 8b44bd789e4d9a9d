#!/usr/bin/env python3
"""Tollgate side-by-side benchmark: direct (the floor), nginx proxy_pass, LiteLLM's proxy
and Tollgate, all in front of the same mock upstream on loopback. Run it through
tests/bench/run.sh, which installs the tools and builds the binaries first.

Standard library only. Every process it starts is stopped at the end (each runs in its own
process group, which is signalled by id). All traffic goes to 127.0.0.1, bounded in time.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RELEASE = os.path.join(ROOT, "target", "release")
ADMIN_TOKEN = "tga_bench_operator_token_0123456789abcdef"
MOCK_KEY = "sk-mock-upstream-key"
LITELLM_KEY = "sk-bench-litellm-master"
SHARED_MASTER_KEY = "0123456789abcdef" * 4
BODY = json.dumps({"model": "mock", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello, benchmark"}]}, separators=(",", ":"))
SLOW_MODEL = "mock-latency=300"
STREAM_MODEL = "mock-chunks=20-pace=5"
STREAM_PACE_MS = 5.0
DRAIN_STREAM_MODEL = "mock-chunks=30-pace=200"  # ~3 s: the soak's streams in flight at SIGTERM
MODELS = ["mock", SLOW_MODEL, STREAM_MODEL, DRAIN_STREAM_MODEL]
REQUEST_TIMEOUT_S = 15
TARGETS = ["direct", "nginx", "litellm", "tollgate"]
GATEWAYS = ["nginx", "litellm", "tollgate"]
# S1, S3 and S4 only: the least a governed proxy on Tollgate's fixed dependencies does (hyper both
# sides, serde_json), without and with a synced record per answer (`floor-proxy`): synced by
# a group-committing thread, or (S1 only: it stalls a worker per sync) on the request's worker.
FLOORS = ["hyper-proxy", "hyper-proxy+sync", "hyper-proxy+inline-sync"]
SYNC_FLOORS = ["hyper-proxy+sync", "hyper-proxy+inline-sync"]
S1_ONLY_FLOORS = ["hyper-proxy+inline-sync"]
FLOOR_LABEL = "&nbsp;&nbsp;the floor: hyper both sides and a synced record, no governance"


def in_report_order(result):
    """The targets and floors that `result` (a scenario's rows) holds, in report order."""
    return [n for n in TARGETS + FLOORS if n in result]


def loaded(ctx, s1=False):
    """The targets a scenario loads: every target, and the floors started (the S1-only
    ones only for S1)."""
    return TARGETS + [f for f in FLOORS if f in ctx["targets"] and (s1 or f not in S1_ONLY_FLOORS)]

PROFILES = {
    "full": {
        "warmup_s": 2,
        "s1_s": 10,
        "s1_rounds": 5,
        "s2_s": 5,
        "s2_rates": [100, 200, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000],
        "s2_conc": 128,
        "s3_s": 5,
        "s3_conc": [1, 2, 4, 8, 16, 32, 64],
        "s4_s": 5,
        "s4_levels": [1, 16, 64, 256],
        "s5_s": 10,
        "s5_rate": 1000,
        "s6_tenants": 10000,
        "s6_policies": 100,
        "s6_s": 10,
        "s6_conc": 16,
        "s6_setup_limit_s": 300,
        "s7_s": 10,
        "s7_rate": 1000,
        "s8_args": [],
        "s9_tenants": 10000,
        "s9_conc": [1, 8, 16, 32, 64],
        "s9_spread_conc": 32,
        "s9_s": 5,
        "s9_setup_limit_s": 900,
    },
    "quick": {
        "warmup_s": 1,
        "s1_s": 2,
        "s1_rounds": 2,
        "s2_s": 2,
        "s2_rates": [100, 500, 1000, 2000],
        "s2_conc": 64,
        "s3_s": 2,
        "s3_conc": [1, 8, 32],
        "s4_s": 2,
        "s4_levels": [1, 32],
        "s5_s": 3,
        "s5_rate": 500,
        "s6_tenants": 1000,
        "s6_policies": 100,
        "s6_s": 3,
        "s6_conc": 16,
        "s6_setup_limit_s": 120,
        "s7_s": 3,
        "s7_rate": 500,
        "s8_args": ["--warm-up-time", "1", "--measurement-time", "2"],
        "s9_tenants": 1000,
        "s9_conc": [1, 16, 32],
        "s9_spread_conc": 32,
        "s9_s": 2,
        "s9_setup_limit_s": 300,
    },
}


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


_PORTS = iter(range(21000 + (os.getpid() % 50) * 100, 32000))


def free_port():
    """A free loopback port below the kernel's ephemeral range, so that a client's
    outgoing connection cannot take it between this check and the service's bind."""
    for port in _PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def first_line(cmd):
    try:
        out = run(cmd, timeout=30)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not found"


# ---------------------------------------------------------------------------- processes

SERVICES = []


class Service:
    """A process in its own process group, with its output in a log file."""

    def __init__(self, name, cmd, logdir, env=None, cwd=None):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        SERVICES.append(self)

    def pids(self):
        """Every live process of this service's group."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:  # pgrp
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
        return pids

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total

    def cpu_s(self):
        """CPU seconds (user + system) used so far by this service's processes; a VM's
        stolen time is not in it, so per-request figures hold in a slow stretch."""
        return sum(cpu_ticks(f"/proc/{pid}/stat") for pid in self.pids()) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL the whole group at once (for a process that stopped answering)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        # Workers left behind in the group (e.g. after the leader died).
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        if self in SERVICES:
            SERVICES.remove(self)


def stop_all():
    for service in list(reversed(SERVICES)):
        try:
            service.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"stopping {service.name}: {e}")


def http_call(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(service, port, path, timeout, method="GET", body=None, headers=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited early; see {service.log_path}")
        try:
            status, data = http_call(port, method, path, body=body, headers=headers, timeout=5)
            if status < 300:
                return
            last = f"HTTP {status}: {data[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} not ready on port {port} after {timeout}s ({last}); see {service.log_path}")


# ---------------------------------------------------------------------------- load tools

class Oha:
    def __init__(self, path):
        self.path = path
        help_text = run([path, "--help"]).stdout
        self.json_flags = ["--output-format", "json"] if "--output-format" in help_text else ["-j"]
        self.version = first_line([path, "--version"])

    def run(self, port, path, auth, conc, secs, rate=None, model=None, body=None):
        body = body or (BODY if model is None else BODY.replace('"mock"', json.dumps(model), 1))
        cmd = [self.path, "--no-tui", *self.json_flags, "-m", "POST", "-d", body,
               "-H", f"Authorization: Bearer {auth}", "-H", "Content-Type: application/json",
               "-c", str(conc), "-z", f"{secs}s", "-t", f"{REQUEST_TIMEOUT_S}s", "--wait-ongoing-requests-after-deadline"]
        if rate:
            cmd += ["-q", str(rate), "--latency-correction"]
        cmd.append(f"http://127.0.0.1:{port}{path}")
        out = run(cmd, timeout=secs + 90)
        if out.returncode != 0:
            raise RuntimeError(f"oha failed: {out.stderr[-500:]}")
        data = json.loads(out.stdout)
        statuses = {str(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
        errors = data.get("errorDistribution") or {}
        ok = statuses.get("200", 0)
        total = sum(statuses.values()) + sum(errors.values())
        pct = data.get("latencyPercentiles") or {}
        summary = data.get("summary") or {}
        ms = lambda v: None if v is None else v * 1000.0  # noqa: E731
        return {
            "conc": conc, "rate": rate, "secs": secs,
            "requests": total, "ok": ok,
            "success": ok / total if total else 0.0,
            "rps": ok / secs,
            "p50_ms": ms(pct.get("p50")), "p90_ms": ms(pct.get("p90")), "p99_ms": ms(pct.get("p99")),
            "p999_ms": ms(pct.get("p99.9")), "mean_ms": ms(summary.get("average")),
            "statuses": statuses, "errors": errors,
        }


def wrk_zipf(port, tokens_file, conc, secs, exponent=1.0, model="mock", stream=False):
    cmd = ["wrk", "-t2", f"-c{conc}", f"-d{secs}s", "--timeout", f"{REQUEST_TIMEOUT_S}s", "-s", os.path.join(HERE, "zipf.lua"),
           f"http://127.0.0.1:{port}", "--", tokens_file, str(exponent), model] + (["stream"] if stream else [])
    out = run(cmd, timeout=secs + 90)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    data = json.loads(line[-1])
    errors = sum(data["errors"].values())
    secs_real = data["duration_us"] / 1e6
    return {
        "conc": conc, "secs": round(secs_real, 2), "requests": data["requests"], "errors": data["errors"],
        "success": (data["requests"] - data["errors"]["status"]) / data["requests"] if data["requests"] else 0.0,
        "rps": (data["requests"] - errors) / secs_real,
        "p50_ms": data["latency_us"]["p50"] / 1000, "p90_ms": data["latency_us"]["p90"] / 1000,
        "p99_ms": data["latency_us"]["p99"] / 1000, "max_ms": data["latency_us"]["max"] / 1000,
    }


class Sampler:
    """Samples a service's RSS (and Tollgate's in-flight gauge) while a load runs."""

    def __init__(self, service, metrics_port=None, interval=0.25):
        self.service, self.metrics_port, self.interval = service, metrics_port, interval
        self.rss, self.in_flight, self.policy_in_flight = [], [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.rss.append(self.service.rss_kib())
            if self.metrics_port:
                try:
                    _, text = http_call(self.metrics_port, "GET", "/metrics", timeout=2)
                    m = re.search(rb"^tollgate_requests_in_flight (\d+)", text, re.M)
                    if m:
                        self.in_flight.append(int(m.group(1)))
                except OSError:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- services

def start_mock(work):
    port = free_port()
    service = Service("mock-upstream", [os.path.join(RELEASE, "mock-upstream"), "--listen", f"127.0.0.1:{port}"], work)
    wait_ready(service, port, "/v1/chat/completions", 30, method="POST", body=BODY, headers={"Content-Type": "application/json"})
    return service, port


def start_nginx(work, upstream_ports, name="nginx", health_path=None):
    """nginx `proxy_pass` to `upstream_ports` (round robin when several): the reference
    proxy in front of the mock, or (with `health_path`) the load balancer in front of
    Tollgate replicas."""
    port = free_port()
    prefix = os.path.join(work, name)
    servers = " ".join(f"server 127.0.0.1:{p};" for p in upstream_ports)
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""# Reference proxy: plain proxy_pass with upstream keep-alive, out-of-the-box logging.
worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    upstream backends {{ {servers} keepalive 512; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
""")
    service = Service(name, ["nginx", "-p", prefix, "-c", conf], work)
    if health_path:
        wait_ready(service, port, health_path, 30)
    else:
        wait_ready(service, port, "/v1/chat/completions", 30, method="POST", body=BODY, headers={"Content-Type": "application/json"})
    return service, port


def cpu_ticks(stat_path):
    """utime + stime, in clock ticks, from a /proc `stat` file (a process's or a
    thread's); 0 if it is gone."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def start_floor(work, mock_port, name):
    """`floor-proxy` in front of the mock as the floor `name` (see FLOORS); a journal file
    sits in the bench's work dir, on the disk Tollgate's data uses."""
    port = free_port()
    cmd = [os.path.join(RELEASE, "floor-proxy"), "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{mock_port}"]
    if name in SYNC_FLOORS:
        cmd += ["--journal", os.path.join(work, f"{name}.journal")]
    if name.endswith("+inline-sync"):
        cmd += ["--inline-sync"]
    service = Service(name, cmd, work)
    wait_ready(service, port, "/v1/chat/completions", 30, method="POST", body=BODY, headers={"Content-Type": "application/json"})
    return service, port


def start_litellm(work, mock_port, litellm_bin, workers):
    port = free_port()
    conf = os.path.join(work, "litellm.yaml")
    with open(conf, "w") as f:
        f.write("model_list:\n")
        for model in MODELS:
            f.write(f'  - model_name: "{model}"\n    litellm_params:\n      model: "openai/{model}"\n'
                    f'      api_base: "http://127.0.0.1:{mock_port}/v1"\n      api_key: "{MOCK_KEY}"\n')
        f.write(f'general_settings:\n  master_key: "{LITELLM_KEY}"\nlitellm_settings:\n  telemetry: false\n')
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", NO_DOCS="True")
    cmd = [litellm_bin, "--config", conf, "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
    service = Service("litellm", cmd, work, env=env, cwd=work)
    wait_ready(service, port, "/v1/chat/completions", 180, method="POST", body=BODY,
               headers={"Content-Type": "application/json", "Authorization": f"Bearer {LITELLM_KEY}"})
    return service, port


HANGS = []
ADMIN_TIMEOUT_S = 20


class AdminStuck(Exception):
    """An operator call got no answer in time."""


def dump_stacks(service, path):
    """Every thread's stack of a hung process (gdb, when installed), and a one-line summary
    of where the threads wait."""
    if not shutil.which("gdb"):
        return "no gdb to take stacks"
    pid = service.proc.pid
    out = run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 40"], timeout=120)
    with open(path, "w") as f:
        f.write(out.stdout)
    threads = out.stdout.split("\nThread ")
    count = lambda needle: sum(1 for t in threads if needle in t)  # noqa: E731
    return (f"{len(threads) - 1} threads; in sled `flush_async`: {count('flush_async')}, "
            f"in sled `transaction` (metering reserve/settle): {count('transaction<')}, "
            f"waiting on sled's concurrency-control lock: {count('concurrency_control')}")


class Tollgate:
    """A Tollgate process with its own data dir, routing to the mock through an
    OpenAI-kind provider `mock` with prices, so budgets and the ledger are exercised."""

    def __init__(self, name, work, data_dir, mock_port, store_url=None):
        self.name = name
        self.store_url = store_url
        self.work = work
        self.port = free_port()
        self.data_dir = data_dir
        self.restarts = 0
        self.generation = 0
        self.recover_lock = threading.Lock()
        self.narrow = threading.Semaphore(2)
        shutil.rmtree(data_dir, ignore_errors=True)
        os.makedirs(data_dir)
        self.config = os.path.join(work, f"{name}.toml")
        with open(self.config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{self.port}"\ndata_dir = "{data_dir}"\n\n'
                    f'[providers.mock]\nkind = "openai"\nbase_url = "http://127.0.0.1:{mock_port}/v1"\n')
            for model in MODELS:
                f.write(f'\n[[models]]\nprovider = "mock"\nmodel = "{model}"\ninput_usd_per_mtok = 1.0\n'
                        f'output_usd_per_mtok = 2.0\ncontext_window = 128000\n')
            if store_url:
                f.write(f'\n[store]\nurl = "{store_url}"\n')
        self.local = threading.local()
        self._start()

    def _start(self):
        env = dict(os.environ, TOLLGATE_ADMIN_TOKEN=ADMIN_TOKEN)
        env.pop("TOLLGATE_MASTER_KEY", None)
        if self.store_url:
            # Every replica on a shared store holds the same master key, from the environment.
            env["TOLLGATE_MASTER_KEY"] = SHARED_MASTER_KEY
        # TOLLGATE_BIN runs another build (a before/after comparison, tests/bench/HOTPATH.md).
        cmd = [os.environ.get("TOLLGATE_BIN", os.path.join(RELEASE, "tollgate")), "serve", "--config", self.config, "--data-dir", self.data_dir,
               "--listen", f"127.0.0.1:{self.port}"]
        label = self.name if not self.restarts else f"{self.name}-restart{self.restarts}"
        self.service = Service(label, cmd, self.work, env=env)
        wait_ready(self.service, self.port, "/healthz", 60)

    def responsive(self, token, timeout=10.0):
        for _ in range(2):
            try:
                status, _ = http_call(self.port, "POST", "/v1/chat/completions", body=BODY, timeout=timeout,
                                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                if status == 200:
                    return True
            except OSError:
                pass
        return False

    def check(self, token, where, result=None):
        """After a load: if the gateway no longer answers a chat request within 10 s (twice),
        take its stacks, kill it and start it again on the same data dir. True if it hung."""
        generation = self.generation
        if self.responsive(token):
            return False
        self.recover(f"after {where}", generation)
        if result is not None:
            result["hung"] = True
        return True

    def admin(self, method, path, body=None, raw=None, conflict_ok=False):
        """One operator call on a keep-alive connection per thread. Raises AdminStuck when
        the gateway does not answer within ADMIN_TIMEOUT_S."""
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=ADMIN_TIMEOUT_S)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                text = response.read()
                break
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                self.local.conn = None
                if isinstance(e, TimeoutError) or attempt == 1:
                    raise AdminStuck(f"{method} {path}: {e!r}") from e
        if conflict_ok and response.status == 409:
            return None
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {text[:300]!r}")
        return json.loads(text) if text else {}

    def recover(self, where, generation):
        """Stacks, kill and restart, once per hang however many threads saw it."""
        with self.recover_lock:
            if generation != self.generation:
                return
            n = len(HANGS) + 1
            stacks = os.path.join(self.work, f"hang-{n}-{self.name}.stacks.txt")
            log(f"{self.name} stopped answering ({where}); taking stacks and restarting")
            summary = dump_stacks(self.service, stacks)
            HANGS.append({"where": where, "instance": self.name, "stacks": os.path.relpath(stacks, ROOT), "summary": summary})
            self.service.kill()
            self.restarts += 1
            self._start()
            self.generation += 1

    def retrying(self, where, call):
        """Runs an admin call, recovering from a hang. Once this instance has hung, admin
        calls go two at a time (the hang is reported; this only lets the scenario go on)."""
        for _ in range(4):
            generation = self.generation
            try:
                if generation == 0:
                    return call()
                with self.narrow:
                    return call()
            except AdminStuck:
                self.recover(where, generation)
        raise RuntimeError(f"{self.name}: {where} failed four times")

    def upload(self, wasm):
        return self.retrying("policy upload", lambda: self.admin("POST", "/admin/v1/policies", raw=wasm)["hash"])

    def create_tenant(self, tenant_id, policy_hash):
        """A tenant with a monthly budget, a sealed credential for `mock`, an inference
        token and the given policy: the original request's shape (`POST /api/v1/tenants`),
        then `PUT .../policy`. After a hang, the same through idempotent calls."""
        config = {"provider": "mock", "credential": "default", "model": "mock", "max_tokens": 64}
        state = {"attempt": 0}

        def quick():
            state["attempt"] += 1
            if state["attempt"] == 1:
                created = self.admin("POST", "/api/v1/tenants", {
                    "tenant_id": tenant_id, "provider": "mock", "api_key": MOCK_KEY, "model": "mock",
                    "max_tokens": 64, "budget_usd_per_month": 1_000_000})
                token = created["token"]
            else:
                self.admin("POST", "/admin/v1/tenants", {"id": tenant_id, "budget_usd": 1_000_000, "budget_period": "month"}, conflict_ok=True)
                self.admin("PUT", f"/admin/v1/tenants/{tenant_id}/credentials/default", {"provider": "mock", "api_key": MOCK_KEY})
                token = self.admin("POST", f"/admin/v1/tenants/{tenant_id}/tokens", {"scope": "inference"})["token"]
            self.admin("PUT", f"/admin/v1/tenants/{tenant_id}/policy", {"hash": policy_hash, "config": config})
            return token

        return self.retrying(f"setting up tenant {tenant_id}", quick)

    def stop(self):
        self.service.stop()


def policy_variants(count):
    """The stock default policy, each copy with a distinct custom section appended, so
    every variant is a distinct component (own hash, own compiled code)."""
    candidates = [
        os.path.join(ROOT, "target", "embedded-policies", "wasm32-wasip2", "release", "tollgate_policy_default.wasm"),
        os.path.join(ROOT, "target", "guests", "wasm32-wasip2", "release", "tollgate_policy_default.wasm"),
    ]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        raise RuntimeError("the default policy wasm is missing; run.sh builds it")
    with open(path, "rb") as f:
        base = f.read()
    variants = []
    for i in range(count):
        name = f"bench-variant-{i:03d}".encode()
        assert len(name) < 127
        variants.append(base + bytes([0x00, len(name) + 1, len(name)]) + name)
    return variants, path, len(base)


# ---------------------------------------------------------------------------- scenarios

def one_tenant_gateway(out, tollgate_class=None):
    """The profiling scripts' setup (profile.py, io_per_request.py): a fresh work dir under
    `out`, the mock upstream and one Tollgate (of `tollgate_class`, default Tollgate) with
    one tenant on the stock policy, warmed up. Returns (oha, tollgate, token); stop
    everything with stop_all()."""
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    oha = Oha(shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))
    _, mock_port = start_mock(work)
    tg = (tollgate_class or Tollgate)("tg", work, os.path.join(work, "data"), mock_port)
    variants, _, _ = policy_variants(1)
    token = setup_tenants(tg, 1, variants)[0][0]
    oha.run(tg.port, "/v1/chat/completions", token, 8, 2)  # warm-up
    return oha, tg, token


def fmt(value, digits=2):
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def us(ms_value):
    return None if ms_value is None else ms_value * 1000.0


def after_load(ctx, name, where, result):
    """Tollgate only: checks it still answers after a load; if not, it is restarted and
    the result marked `hung`. Returns True when it had hung."""
    if name != "tollgate":
        return False
    tg = ctx["tollgate"]
    hung = tg.check(ctx["targets"]["tollgate"]["auth"], where, result)
    if hung:
        ctx["targets"]["tollgate"]["service"] = tg.service
    return hung


def s1(ctx):
    """Concurrency 1, the targets interleaved: `s1_rounds` rounds, each giving every target
    an equal slice of `s1_s` in turn, so a slow stretch of the machine falls on all of them
    alike. Per target: the median over rounds of p50, p99 and req/s, and of the added p50
    and p99 (target − direct within the same round)."""
    names = loaded(ctx, s1=True)
    rounds, slice_s = ctx["p"]["s1_rounds"], max(1, ctx["p"]["s1_s"] // ctx["p"]["s1_rounds"])
    runs = {name: [] for name in names}
    for r in range(rounds):
        log(f"S1 round {r + 1}/{rounds}: concurrency 1, {slice_s}s per target")
        for name in names:
            t = ctx["targets"][name]
            cpu = t["service"].cpu_s()
            result = ctx["oha"].run(t["port"], t["path"], t["auth"], 1, slice_s)
            result["cpu_us_per_request"] = (t["service"].cpu_s() - cpu) * 1e6 / max(result["ok"], 1)
            runs[name].append(result)
            after_load(ctx, name, "S1", result)
    rows = {}
    for name in names:
        row = {"conc": 1, "rounds": rounds, "secs": slice_s * rounds}
        for key in ("rps", "p50_ms", "p99_ms", "success", "cpu_us_per_request"):
            row[key] = median_of(run[key] for run in runs[name])
        row["requests"] = sum(run["requests"] for run in runs[name])
        for q in ("p50", "p99"):
            row[f"added_{q}_us"] = median_of(us(a[f"{q}_ms"] - d[f"{q}_ms"]) for a, d in zip(runs[name], runs["direct"])
                                             if a[f"{q}_ms"] is not None and d[f"{q}_ms"] is not None)
        row["by_round"] = [{k: run[k] for k in ("rps", "p50_ms", "p99_ms")} for run in runs[name]]
        rows[name] = row
    return rows


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def saturated(result, base_p99):
    return (result["success"] < 0.99 or result["rps"] < 0.9 * result["rate"]
            or (result["p99_ms"] or 1e9) > max(50.0, 10 * base_p99))


def s2(ctx):
    p = ctx["p"]
    steps, done_at, base = [], {}, {}
    for rate in p["s2_rates"]:
        step = {"rate": rate}
        for name in TARGETS:
            if name in done_at:
                continue
            t = ctx["targets"][name]
            log(f"S2 {name}: {rate} req/s open loop for {p['s2_s']}s")
            r = ctx["oha"].run(t["port"], t["path"], t["auth"], p["s2_conc"], p["s2_s"], rate=rate)
            base.setdefault(name, r["p99_ms"] or 1.0)
            r["saturated"] = after_load(ctx, name, f"S2 at {rate} req/s", r) or saturated(r, base[name])
            step[name] = r
            if r["saturated"]:
                done_at[name] = rate
        steps.append(step)
        if "tollgate" in done_at:
            break
    return {"steps": steps, "saturated_at": done_at}


def closed_loop(load, levels, label, hung=lambda conc, r: False):
    """Closed-loop sweep: `load(conc)` at each of `levels` connections, going on past
    p99 = 10 ms only while throughput still grows (to find the peak). `hung` checks the
    target after each level. Returns every level, the best under 10 ms p99 and the peak."""
    done = []
    for conc in levels:
        log(f"{label}: closed loop, {conc} connections")
        r = load(conc)
        done.append(r)
        if hung(conc, r):
            break
        grew = len(done) < 2 or r["rps"] > 1.1 * done[-2]["rps"]
        if r["p99_ms"] is None or (r["p99_ms"] >= 10.0 and conc >= 8 and not grew) or r["p99_ms"] >= 500.0:
            break
    under = [r for r in done if r["p99_ms"] is not None and r["p99_ms"] < 10.0 and r["success"] >= 0.99 and not r.get("hung")]
    best = max(under, key=lambda r: r["rps"]) if under else None
    return {"levels": done, "best_under_10ms": best, "peak": max(done, key=lambda r: r["rps"])}


def s3(ctx):
    p = ctx["p"]
    out = {}
    for name in loaded(ctx):
        t = ctx["targets"][name]
        out[name] = closed_loop(
            lambda conc: ctx["oha"].run(t["port"], t["path"], t["auth"], conc, p["s3_s"]), p["s3_conc"], f"S3 {name}",
            hung=lambda conc, r: after_load(ctx, name, f"S3 closed loop at {conc} connections", r))
    return out


def s4(ctx):
    p = ctx["p"]
    out = {}
    for name in loaded(ctx):
        t = ctx["targets"][name]
        out[name] = []
        for level in p["s4_levels"]:
            log(f"S4 {name}: {level} concurrent streams for {p['s4_s']}s")
            cmd = [sys.executable, os.path.join(HERE, "stream_client.py"), "--port", str(t["port"]), "--path", t["path"],
                   "--auth", t["auth"], "--model", STREAM_MODEL, "--concurrency", str(level), "--duration", str(p["s4_s"]),
                   "--pace-ms", str(STREAM_PACE_MS), "--timeout", "30"]
            res = run(cmd, timeout=p["s4_s"] + 120)
            if res.returncode != 0:
                raise RuntimeError(f"stream client failed: {res.stderr[-500:]}")
            out[name].append(json.loads(res.stdout))
            if after_load(ctx, name, f"S4 with {level} streams", out[name][-1]):
                break
    return out


def extra_gap(r, d):
    if r is None or r["max_gap_ms"]["p99"] is None or d["max_gap_ms"]["p99"] is None:
        return None
    return r["max_gap_ms"]["p99"] - d["max_gap_ms"]["p99"]


def worst_extra_gap(s4r, name):
    """The largest extra gap `name` shows over direct at any level, and that level."""
    worst, where = 0.0, None
    for d, r in zip(s4r["direct"], s4r[name]):
        if extra_gap(r, d) is not None and extra_gap(r, d) > worst:
            worst, where = extra_gap(r, d), r.get("concurrency")
    return worst, where


def ttft_ratio_at(s4r, name, i):
    """At the i-th level: (ratio of `name`'s added TTFT p99 to nginx's, name's added,
    nginx's added), or None."""
    if i >= len(s4r[name]) or i >= len(s4r["nginx"]):
        return None
    dp = s4r["direct"][i]["ttft_ms"]["p99"]
    tp, np_ = s4r[name][i]["ttft_ms"]["p99"], s4r["nginx"][i]["ttft_ms"]["p99"]
    if None in (dp, tp, np_):
        return None
    # nginx's added TTFT can be ~0 or negative (noise): floor it at 0.1 ms.
    return (tp - dp) / max(np_ - dp, 0.1), tp - dp, np_ - dp


def worst_ttft_ratio(s4r, name, levels):
    """The largest ratio of `name`'s added TTFT p99 to nginx's at the same level, and
    (level, name's added, nginx's added) there."""
    worst_ratio, where = 0.0, None
    for i in range(len(s4r["direct"])):
        at = ttft_ratio_at(s4r, name, i)
        if at and at[0] > worst_ratio:
            worst_ratio, where = at[0], (levels[i], at[1], at[2])
    return worst_ratio, where


def stall_free(r, d):
    if r is None or r.get("hung") or not r["streams"] or sum(r["errors"].values()):
        return False
    extra = extra_gap(r, d)
    return extra is not None and extra <= 5.0 and r["gaps_over_35ms"] <= d["gaps_over_35ms"]


def s5(ctx):
    p = ctx["p"]
    out = {}
    conc = max(64, int(p["s5_rate"] * 0.3 * 2.5))
    for name in TARGETS:
        t = ctx["targets"][name]
        service = t["service"]
        idle = service.rss_kib()
        log(f"S5 {name}: {p['s5_rate']} req/s to a 300 ms upstream for {p['s5_s']}s")
        with Sampler(service, metrics_port=t["port"] if name == "tollgate" else None) as sampler:
            r = ctx["oha"].run(t["port"], t["path"], t["auth"], conc, p["s5_s"], rate=p["s5_rate"], model=SLOW_MODEL)
        after_load(ctx, name, f"S5 at {p['s5_rate']} req/s", r)
        r["rss_idle_kib"] = idle
        r["rss_peak_kib"] = max(sampler.rss) if sampler.rss else None
        r["in_flight_little"] = r["rps"] * (r["mean_ms"] or 0) / 1000.0
        r["in_flight_gauge_max"] = max(sampler.in_flight) if sampler.in_flight else None
        out[name] = r
    return out


def setup_tenants(tollgate, count, variants, threads=32, limit_s=600):
    started = time.time()
    deadline = started + limit_s
    with ThreadPoolExecutor(2) as pool:
        hashes = list(pool.map(tollgate.upload, variants))
    uploaded = time.time()
    rss_after_uploads = tollgate.service.rss_kib()
    ids = [f"t{i:05d}" for i in range(count)]
    hung_before = tollgate.generation

    def one(i):
        if time.time() > deadline:
            raise RuntimeError(f"setting up {count} tenants took over {limit_s} s; gave up at tenant {i}")
        return tollgate.create_tenant(ids[i], hashes[i % len(hashes)])
    with ThreadPoolExecutor(threads) as pool:
        tokens = list(pool.map(one, range(count)))
    finished = time.time()
    return tokens, {"policies": len(hashes), "upload_s": uploaded - started, "tenants_s": finished - uploaded,
                    "tenants_per_s": count / (finished - uploaded), "setup_hangs": tollgate.generation - hung_before,
                    "rss_after_uploads_kib": rss_after_uploads}


def expected_distinct(n_tenants, n_requests, exponent=1.0):
    weights = [1.0 / (i ** exponent) for i in range(1, n_tenants + 1)]
    total = sum(weights)
    return sum(1.0 - (1.0 - w / total) ** n_requests for w in weights)


def du_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def s6(ctx):
    p = ctx["p"]
    variants, source, base_len = policy_variants(p["s6_policies"])
    out = {"policy_source": os.path.relpath(source, ROOT), "policy_bytes": base_len}
    conc = p["s6_conc"]
    for label, count in (("1 tenant", 1), (f"{p['s6_tenants']:,} tenants", p["s6_tenants"])):
        tg = Tollgate(f"tollgate-s6-{count}", ctx["work"], os.path.join(ctx["work"], f"data-s6-{count}"), ctx["mock_port"])
        try:
            fresh = tg.service.rss_kib()
            log(f"S6 {label}: setting up ({min(count, len(variants))} policies)")
            tokens, setup = setup_tenants(tg, count, variants[:count] if count < len(variants) else variants, limit_s=p["s6_setup_limit_s"])
            tokens_file = os.path.join(ctx["work"], f"tokens-{count}.txt")
            with open(tokens_file, "w") as f:
                f.write("\n".join(tokens) + "\n")
            after_setup = tg.service.rss_kib()
            warm_hung = False
            for attempt in range(2):
                log(f"S6 {label}: warm-up then {p['s6_s']}s Zipf load at {conc} connections")
                wrk_zipf(tg.port, tokens_file, conc, max(1, p["warmup_s"]))
                warm_hung = tg.check(tokens[0], f"S6 warm-up, {label}, {conc} connections") or warm_hung
                with Sampler(tg.service) as sampler:
                    r = wrk_zipf(tg.port, tokens_file, conc, p["s6_s"])
                tg.check(tokens[0], f"S6 {label}, {conc} connections", r)
                # If the 1-tenant instance hangs, both instances are measured again at 4
                # connections, so that the comparison is still like for like.
                if count == 1 and attempt == 0 and (warm_hung or r.get("hung")) and conc > 4:
                    out["first_try"] = {"conc": conc, "hung": True}
                    conc, warm_hung = 4, False
                    continue
                break
            r["hung"] = r.get("hung", False) or warm_hung
            r.update(setup)
            r["tenants"] = count
            r["rss_fresh_kib"] = fresh
            r["rss_after_setup_kib"] = after_setup
            r["rss_peak_kib"] = max(sampler.rss) if sampler.rss else None
            r["rss_after_kib"] = tg.service.rss_kib()
            r["data_dir_bytes"] = du_bytes(tg.data_dir)
            r["distinct_tenants_expected"] = expected_distinct(count, r["requests"]) if count > 1 else 1
            out[label] = r
        finally:
            tg.stop()
    return out


def s7(ctx):
    p = ctx["p"]
    out = {}
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    places = [("disk", os.path.join(ctx["work"], "data-s7-disk"))]
    if shm:
        places.append(("tmpfs", os.path.join(shm, f"tollgate-bench-{os.getpid()}")))
    variants, _, _ = policy_variants(1)
    for label, data_dir in places:
        tg = Tollgate(f"tollgate-s7-{label}", ctx["work"], data_dir, ctx["mock_port"])
        try:
            token = setup_tenants(tg, 1, variants)[0][0]
            ctx["oha"].run(tg.port, "/v1/chat/completions", token, 4, max(1, p["warmup_s"]))
            tg.check(token, f"S7 warm-up, data dir on {label}")
            log(f"S7 {label}: concurrency 1, then {p['s7_rate']} req/s, then closed loop at 16")
            out[label] = {}
            for key, conc, rate in (("c1", 1, None), ("rate", 64, p["s7_rate"]), ("c16", 16, None)):
                r = ctx["oha"].run(tg.port, "/v1/chat/completions", token, conc, p["s7_s"], rate=rate)
                tg.check(token, f"S7 {key}, data dir on {label}", r)
                out[label][key] = r
        finally:
            tg.stop()
            if label == "tmpfs":
                shutil.rmtree(data_dir, ignore_errors=True)
    return out


def s8(ctx):
    log("S8 cargo bench -p tollgate-tests --bench policy_call")
    cmd = ["cargo", "bench", "-p", "tollgate-tests", "--bench", "policy_call", "--", *ctx["p"]["s8_args"]]
    res = run(cmd, cwd=ROOT, timeout=900)
    text = res.stdout + res.stderr
    with open(os.path.join(ctx["work"], "s8-policy-call.log"), "w") as f:
        f.write(text)
    found = {}
    for m in re.finditer(r"(policy_call/\S+)\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", text):
        def to_us(value, unit):
            return float(value) * {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}[unit]
        found[m.group(1)] = {"low_us": to_us(m.group(2), m.group(3)), "median_us": to_us(m.group(4), m.group(5)),
                             "high_us": to_us(m.group(6), m.group(7))}
    return {"command": " ".join(shlex.quote(c) for c in cmd), "exit": res.returncode, "results": found}


# ---------------------------------------------------------------------------- report

def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        mem_kib = 0
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 1048576, 1),
            "kernel": platform.release(), "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])}


def other_builds():
    out = run(["pgrep", "-x", "cargo|rustc"])
    mine = {str(os.getpid())}
    return [p for p in out.stdout.split() if p not in mine]


def mib(kib):
    return None if kib is None else kib / 1024.0


def verdict(ok):
    return "met" if ok else "missed"


def report(ctx, results):
    p, versions, machine = ctx["p"], ctx["versions"], ctx["machine"]
    L = []
    add = L.append
    add("# Tollgate benchmark results")
    add("")
    add(f"Measured {ctx['date']} by `{ctx['command']}` ({ctx['profile']} profile, harness run took "
        f"{ctx['elapsed_s'] / 60:.1f} min). Direct (the mock upstream itself, the baseline), nginx `proxy_pass`, "
        f"LiteLLM's proxy and Tollgate run side by side in this one run against the same mock upstream on loopback; "
        f"**ratios within this run are what matter**, not absolute times. The load generator, the proxy under test and "
        f"the mock share the machine's {machine['cores']} cores.")
    add("")
    add("Tollgate runs its real request path for every request: token authentication, the tenant's WebAssembly "
        "policy (the stock `default` policy with a distinct custom section per variant), budget reservation and "
        "settlement, the ledger record and rollups flushed to the store before the answer, and a sealed credential "
        "opened per request; it reaches the mock through an OpenAI-kind provider `mock` with prices, not the "
        "in-process demo provider. Every process runs with its out-of-the-box logging, to a file.")
    add("")
    add("| | |")
    add("| --- | --- |")
    add(f"| machine | {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']}, Linux {machine['kernel']} |")
    for k, v in versions.items():
        add(f"| {k} | {v} |")
    add(f"| other cargo/rustc processes at start | {ctx['busy_start'] or 'none'} |")
    add(f"| load average at start / end | {ctx['load_start']} / {ctx['load_end']} |")
    add("")

    # Targets.
    s1r, s3r, s4r, s6r, s8r = results.get("S1"), results.get("S3"), results.get("S4"), results.get("S6"), results.get("S8")
    add("## Targets")
    add("")
    add("| target | measured | verdict |")
    add("| --- | --- | --- |")
    if HANGS:
        add(f"| Tollgate keeps answering under load | stopped answering {len(HANGS)} time(s): "
            f"{'; '.join(h['where'] for h in HANGS)} (see below) | missed |")
    if s1r:
        # Issue 12: Tollgate's added latency against nginx proxy_pass's, measured in this run.
        tg, ng = s1r["tollgate"], s1r["nginx"]
        for q, bound in (("p50", 3), ("p99", 2)):
            t, n = tg[f"added_{q}_us"], ng[f"added_{q}_us"]
            ok = t is not None and n is not None and n > 0 and t <= bound * n
            ratio = t / n if t is not None and n else float("nan")
            add(f"| S1 added {q} ≤ {bound}× nginx's added {q} | {fmt(t)} vs {fmt(n)} µs = {fmt(ratio)}× | {verdict(ok)} |")
            floors = [(s1r[f][f"added_{q}_us"], f) for f in SYNC_FLOORS if f in s1r and s1r[f][f"added_{q}_us"] is not None]
            if floors and not ok and n is not None and n > 0:
                f, name = min(floors)
                where = "above" if f > bound * n else "within"
                add(f"| {FLOOR_LABEL} (the lower of the `floor-proxy` sync floors, {name}) | "
                    f"{fmt(f)} µs added = {fmt(f / n)}× nginx's; Tollgate adds {fmt(t - f)} µs above it | the floor is {where} the target |")
    if s3r:
        tg = s3r["tollgate"]["best_under_10ms"]
        ng = s3r["nginx"]["best_under_10ms"]
        ll = (s3r.get("litellm") or {}).get("peak")
        tg_rps = tg["rps"] if tg else 0.0
        ng_rps = ng["rps"] if ng else 0.0
        ll_rps = ll["rps"] if ll else 0.0
        add(f"| S3 ≥ ½ of nginx (p99 < 10 ms) | {fmt(tg_rps)} vs {fmt(ng_rps)} req/s = {fmt(tg_rps / ng_rps if ng_rps else float('nan'))}× | {verdict(ng_rps and tg_rps >= 0.5 * ng_rps)} |")
        floor = s3r.get("hyper-proxy+sync")
        if floor and ng_rps and tg_rps < 0.5 * ng_rps:
            f_rps = floor["best_under_10ms"]["rps"] if floor["best_under_10ms"] else 0.0
            where = "below" if f_rps < 0.5 * ng_rps else "within"
            add(f"| {FLOOR_LABEL} (`floor-proxy`) | "
                f"{fmt(f_rps)} req/s = {fmt(f_rps / ng_rps)}× nginx; Tollgate serves {fmt(tg_rps / f_rps if f_rps else float('nan'))}× the floor | the floor is {where} the target |")
        add(f"| S3 ≥ 50× LiteLLM (its peak, any p99) | {fmt(tg_rps)} vs {fmt(ll_rps)} req/s = {fmt(tg_rps / ll_rps if ll_rps else float('nan'))}× | {verdict(ll_rps and tg_rps >= 50 * ll_rps)} |")
    if s4r:
        complete = len(s4r["tollgate"]) == len(s4r["direct"]) and not any(t.get("hung") for t in s4r["tollgate"])
        worst, level = worst_extra_gap(s4r, "tollgate")
        note = "" if complete else " (Tollgate hung before the last level)"
        add(f"| S4 no stall > 5 ms that direct does not show | worst (Tollgate − direct) p99 of per-stream max gap: {fmt(worst)} ms"
            f"{f' (at {level} streams)' if level else ''}{note} | {verdict(worst <= 5.0 and complete)} |")
        # The floor at the level of Tollgate's worst: a blip of the floor's at another level says nothing of it.
        floor = "hyper-proxy+sync"
        if floor in s4r and level in p["s4_levels"] and not (worst <= 5.0 and complete):
            i = p["s4_levels"].index(level)
            f_extra = extra_gap(s4r[floor][i], s4r["direct"][i]) if i < len(s4r[floor]) else None
            if f_extra is not None:
                add(f"| {FLOOR_LABEL} (`floor-proxy`) | extra gap {fmt(f_extra)} ms at {level} streams "
                    f"| the floor is {'above' if f_extra > 5.0 else 'within'} the target |")
        worst_ratio, where = worst_ttft_ratio(s4r, "tollgate", p["s4_levels"])
        if where:
            add(f"| S4 added TTFT p99 ≤ 2× nginx's | worst at {where[0]} streams: {fmt(where[1])} vs {fmt(where[2])} ms = {fmt(worst_ratio)}× | {verdict(worst_ratio <= 2 and complete)} |")
            if floor in s4r and not (worst_ratio <= 2 and complete):
                f_at = ttft_ratio_at(s4r, floor, p["s4_levels"].index(where[0]))
                if f_at:
                    add(f"| {FLOOR_LABEL} (`floor-proxy`) | at {where[0]} streams: "
                        f"{fmt(f_at[1])} vs {fmt(f_at[2])} ms = {fmt(f_at[0])}× | the floor is {'above' if f_at[0] > 2 else 'within'} the target |")
    if s6r:
        keys = list(s6r.keys())
        one, many = s6r.get("1 tenant"), s6r.get([k for k in keys if k.endswith("tenants")][0])
        ratio = many["p99_ms"] / one["p99_ms"] if one["p99_ms"] else float("nan")
        hung = " (a run hung)" if many.get("hung") or one.get("hung") else ""
        add(f"| S6 p99 within 1.5× of 1 tenant | {fmt(many['p99_ms'])} vs {fmt(one['p99_ms'])} ms = {fmt(ratio)}×{hung} | {verdict(ratio <= 1.5 and not hung)} |")
        peak = mib(many["rss_peak_kib"])
        add(f"| S6 RSS ≤ 300 MB with {many['tenants']:,} tenants | {fmt(peak)} MiB peak | {verdict(peak * 1.048576 <= 300)} |")
    if s8r and s8r["results"]:
        d = s8r["results"].get("policy_call/default_fresh_instance_no_imports")
        if d:
            add(f"| S8 ≤ 20 µs per policy call (default) | {fmt(d['median_us'])} µs median | {verdict(d['median_us'] <= 20)} |")
        d = s8r["results"].get("policy_call/aliases_fresh_instance_with_imports")
        if d:
            add(f"| S8 ≤ 25 µs per policy call with imports | {fmt(d['median_us'])} µs median (`aliases` policy) | {verdict(d['median_us'] <= 25)} |")
    add("")

    if s1r:
        add("## S1 added latency, concurrency 1, non-streaming")
        add("")
        rounds = p.get("s1_rounds", 1)
        if rounds == 1:  # results from before the rounds
            add(f"`oha -c 1 -z {p['s1_s']}s`, one connection, keep-alive. Added = target − direct.")
        else:
            add(f"`oha -c 1`, one connection, keep-alive, {p['s1_s']} s per target in {rounds} interleaved rounds "
                f"(every target in turn, {max(1, p['s1_s'] // rounds)} s each, then again), so a slow stretch of the "
                f"machine falls on all alike. Each figure is the median over the rounds; added = target − direct "
                f"within the same round.")
        add("")
        if any(f in s1r for f in FLOORS):
            add("The floors are `floor-proxy` (`tests/src/bin/floor_proxy.rs`): hyper's server side, serde_json on the "
                "request and the answer, hyper-util's client to the mock; `+sync` also appends a record to a file and "
                "`fdatasync`s it before answering, as Tollgate's ledger must, through a group-committing thread; "
                "`+inline-sync` writes and syncs on the request's own worker (no hand-off: the least one connection "
                "can wait, though it stalls a worker per sync). No authentication, policy or budget: "
                "what the floor adds above nginx is the fixed dependencies' and the durable record's cost on this "
                "machine, what Tollgate adds above the floor is its own.")
            add("")
        add("| target | req/s | p50 µs | p99 µs | added p50 µs | added p99 µs | p99 ÷ direct p99 | CPU µs / request |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in in_report_order(s1r):
            r = s1r[name]
            add(f"| {name} | {fmt(r['rps'])} | {fmt(us(r['p50_ms']))} | {fmt(us(r['p99_ms']))} | {fmt(r['added_p50_us'])} | {fmt(r['added_p99_us'])} | {fmt(r['p99_ms'] / s1r['direct']['p99_ms'])} | {fmt(r.get('cpu_us_per_request'))} |")
        if any(f in s1r for f in FLOORS):
            add("")
            add("CPU µs / request: user and system time of the target's processes over its slices (for direct, the "
                "mock's own), divided by the requests answered; the machine's stolen time is not in it.")
        add("")

    s2r = results.get("S2")
    if s2r:
        add("## S2 fixed-rate sweep (open loop, latency-corrected)")
        add("")
        add(f"`oha -q RATE --latency-correction -c {p['s2_conc']} -z {p['s2_s']}s` at each rate; a target is "
            f"saturated (marked **sat**) when fewer than 99% succeed, it serves under 90% of the offered rate, "
            f"or p99 exceeds max(50 ms, 10× its first p99); it is not run at higher rates after that. The sweep "
            f"ends at the rate where Tollgate saturates.")
        add("")
        add("| offered req/s | " + " | ".join(f"{n} p50 / p99 ms, ok" for n in TARGETS) + " |")
        add("| --- | " + " | ".join("---" for _ in TARGETS) + " |")
        for step in s2r["steps"]:
            cells = []
            for name in TARGETS:
                r = step.get(name)
                if r is None:
                    cells.append("")
                else:
                    mark = " **hung**" if r.get("hung") else (" **sat**" if r["saturated"] else "")
                    cells.append(f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])}, {r['success'] * 100:.1f}%{mark}")
            add(f"| {step['rate']:,} | " + " | ".join(cells) + " |")
        add("")
        add("Saturated at: " + ", ".join(f"{n} {s2r['saturated_at'].get(n, 'not within the sweep')}" for n in TARGETS) + ".")
        add("")

    if s3r:
        add("## S3 max throughput, closed loop")
        add("")
        add(f"`oha -c C -z {p['s3_s']}s` for C in {p['s3_conc']}, until p99 passes 10 ms (at C ≥ 8) and throughput "
            f"stops growing by 10% a step, or p99 passes 500 ms."
            + (" The floors (`floor-proxy`) are as in S1." if any(f in s3r for f in FLOORS) else ""))
        add("")
        add("| target | best req/s with p99 < 10 ms (C, p99 ms) | peak req/s (C, p99 ms) | best ÷ nginx best | best ÷ LiteLLM peak |")
        add("| --- | --- | --- | --- | --- |")
        ng = s3r["nginx"]["best_under_10ms"]
        ll = (s3r.get("litellm") or {}).get("peak")
        for name in in_report_order(s3r):
            b, pk = s3r[name]["best_under_10ms"], s3r[name]["peak"]
            best = f"{fmt(b['rps'])} ({b['conc']}, {fmt(b['p99_ms'])})" if b else "none"
            ratio_ng = fmt(b["rps"] / ng["rps"]) if b and ng else "—"
            ratio_ll = fmt(b["rps"] / ll["rps"]) if b and ll else "—"
            add(f"| {name} | {best} | {fmt(pk['rps'])} ({pk['conc']}, {fmt(pk['p99_ms'])}) | {ratio_ng} | {ratio_ll} |")
        add("")
        add("<details><summary>every level</summary>")
        add("")
        add("| target | C | req/s | p50 ms | p99 ms | ok |")
        add("| --- | --- | --- | --- | --- | --- |")
        for name in in_report_order(s3r):
            for r in s3r[name]["levels"]:
                mark = " **hung**" if r.get("hung") else ""
                add(f"| {name} | {r['conc']} | {fmt(r['rps'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['success'] * 100:.1f}%{mark} |")
        add("")
        add("</details>")
        add("")

    if s4r:
        add("## S4 streaming")
        add("")
        add(f"`tests/bench/stream_client.py`: model `{STREAM_MODEL}` (the mock sends 20 content pieces "
            f"{STREAM_PACE_MS:g} ms apart), each connection streaming one response after another for {p['s4_s']} s. "
            f"TTFT = request written → first read holding non-empty content. Max gap = per stream, the longest time "
            f"between two reads holding SSE events (the mock's own pacing jitter shows in direct's figures). "
            f"Columns show p50 / p99 over streams; *extra gap* is the target's p99 of per-stream max gap minus "
            f"direct's at the same level (a stall the gateway adds); *gaps > 35 ms* counts streams with a Nagle / "
            f"delayed-ACK sized gap."
            + (" The floors (`floor-proxy`, as in S1) relay the stream frame by frame; with `+sync` the frame "
               "holding `[DONE]` waits for the record's sync." if any(f in s4r for f in FLOORS) else ""))
        add("")
        add("| streams | target | streams done | TTFT ms | added TTFT p50 ms | max gap ms | extra gap ms | gaps > 35 ms | errors |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for i, level in enumerate(p["s4_levels"]):
            d = s4r["direct"][i]
            for name in in_report_order(s4r):
                if i >= len(s4r[name]):
                    add(f"| {level} | {name} | not run: hung at a lower level | | | | | | |")
                    continue
                r = s4r[name][i]
                errors = sum(r["errors"].values())
                if r.get("hung"):
                    errors = f"{errors}, **hung**"
                added = (r["ttft_ms"]["p50"] - d["ttft_ms"]["p50"]) if r["ttft_ms"]["p50"] is not None and d["ttft_ms"]["p50"] is not None else None
                add(f"| {level} | {name} | {r['streams']} | {fmt(r['ttft_ms']['p50'])} / {fmt(r['ttft_ms']['p99'])} | {fmt(added)} | "
                    f"{fmt(r['max_gap_ms']['p50'])} / {fmt(r['max_gap_ms']['p99'])} (max {fmt(r['max_gap_ms']['max'])}) | "
                    f"{fmt(extra_gap(r, d))} | {r['gaps_over_35ms']} | {errors} |")
        add("")
        for name in GATEWAYS:
            clean = None
            for i, lvl in enumerate(p["s4_levels"]):
                if not stall_free(s4r[name][i] if i < len(s4r[name]) else None, s4r["direct"][i]):
                    break
                clean = lvl
            add(f"- {name}: streams run without stalls (extra gap ≤ 5 ms, no more 35 ms gaps than direct, no errors) "
                f"up to {clean if clean is not None else 'none'} of the levels {p['s4_levels']} concurrent streams.")
        add("")

    s5r = results.get("S5")
    if s5r:
        add("## S5 slow upstream: requests in flight and memory")
        add("")
        add(f"Model `{SLOW_MODEL}` (the mock waits 300 ms), `oha -q {p['s5_rate']} --latency-correction -z {p['s5_s']}s`. "
            f"In flight by Little's law (served req/s × mean latency); for Tollgate also the peak of its "
            f"`tollgate_requests_in_flight` gauge. RSS = sum of VmRSS over the target's processes, sampled every 250 ms; "
            f"KiB per in-flight request = (peak − idle) ÷ the larger in-flight figure.")
        add("")
        add("| target | served req/s | ok | p50 ms | p99 ms | in flight | RSS idle MiB | RSS peak MiB | KiB per in-flight request |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in TARGETS:
            r = s5r[name]
            inflight = f"{r['in_flight_little']:.0f}" + (f" (gauge {r['in_flight_gauge_max']})" if r["in_flight_gauge_max"] is not None else "")
            held = max(r["in_flight_little"], r["in_flight_gauge_max"] or 0)
            per = (r["rss_peak_kib"] - r["rss_idle_kib"]) / held if held else None
            hung = " **hung**" if r.get("hung") else ""
            add(f"| {name} | {fmt(r['rps'])} | {r['success'] * 100:.1f}%{hung} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {inflight} | "
                f"{fmt(mib(r['rss_idle_kib']))} | {fmt(mib(r['rss_peak_kib']))} | {fmt(per)} |")
        add("")

    if s6r:
        add("## S6 many tenants")
        add("")
        many_key = [k for k in s6r if k.endswith("tenants")][0]
        many = s6r[many_key]
        add(f"Two fresh Tollgate instances: one with 1 tenant, one with {many['tenants']:,}. Every tenant has an "
            f"inference token, a sealed credential for `mock`, a monthly budget and a policy: one of "
            f"{many['policies']} distinct components (`{s6r['policy_source']}`, {s6r['policy_bytes']:,} bytes, plus a "
            f"custom section `bench-variant-NNN`), tenant *i* on variant *i* mod {many['policies']}. Set up over the "
            f"admin API with 32 parallel clients (`POST /api/v1/tenants`, then `PUT …/policy`). Load: "
            f"`wrk -t2 -c{many['conc']} -d{p['s6_s']}s -s tests/bench/zipf.lua`, each request's token drawn with "
            f"weight 1/rank (Zipf, s = 1), closed loop, after a {p['warmup_s']} s warm-up.")
        if s6r.get("first_try"):
            add("")
            add(f"(At {s6r['first_try']['conc']} connections the 1-tenant instance stopped answering, so both instances "
                f"were measured at {many['conc']}.)")
        add("")
        add("| instance | req/s | p50 ms | p99 ms | ok | distinct tenants hit (expected) | setup | RSS fresh MiB | RSS after policy uploads MiB | RSS after tenants MiB | RSS peak under load MiB | data dir MiB |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for label, r in s6r.items():
            if not isinstance(r, dict) or "rps" not in r:
                continue
            setup = f"{r['policies']} uploads {r['upload_s']:.1f} s, tenants {r['tenants_s']:.1f} s ({r['tenants_per_s']:.0f}/s)"
            if r.get("setup_hangs"):
                setup += f", **{r['setup_hangs']} hang(s)**, then 2 parallel clients"
            hung = " **hung**" if r.get("hung") else ""
            add(f"| {label} | {fmt(r['rps'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['success'] * 100:.1f}%{hung} | "
                f"{fmt(float(r['distinct_tenants_expected']))} | {setup} | {fmt(mib(r['rss_fresh_kib']))} | "
                f"{fmt(mib(r.get('rss_after_uploads_kib')))} | {fmt(mib(r['rss_after_setup_kib']))} | {fmt(mib(r['rss_peak_kib']))} | "
                f"{fmt(r['data_dir_bytes'] / 1048576)} |")
        one = s6r["1 tenant"]
        per_tenant = (many["rss_peak_kib"] - one["rss_peak_kib"]) / max(1, many["tenants"] - 1)
        add("")
        add(f"Ratios: throughput {fmt(many['rps'] / one['rps'])}×, p99 {fmt(many['p99_ms'] / one['p99_ms'])}× the 1-tenant "
            f"figures; memory per tenant (peak RSS difference ÷ tenants) {fmt(per_tenant)} KiB.")
        if many.get("rss_after_uploads_kib") and one.get("rss_after_uploads_kib"):
            per_component = (many["rss_after_uploads_kib"] - one["rss_after_uploads_kib"]) / max(1, many["policies"] - one["policies"])
            per_record = (many["rss_after_setup_kib"] - many["rss_after_uploads_kib"]) / many["tenants"]
            add(f"Split at rest: {fmt(per_component)} KiB per distinct policy component (uploaded and compiled), "
                f"{fmt(per_record)} KiB per tenant record (tenant, token, sealed credential, policy assignment).")
        add("")

    s7r = results.get("S7")
    if s7r:
        add("## S7 ledger writes")
        add("")
        add("Metering is always on: Tollgate has no config field or environment variable that turns the ledger "
            "or its flush off (every request reserves, settles and writes its ledger record and rollups, then "
            "a store flush makes them durable before the answer is sent). **Ledger on vs off is therefore not "
            "measurable.** What can be measured with an existing knob (`--data-dir`) is the cost of the "
            "durability flush itself: the same 1-tenant setup with the data dir on the disk vs on tmpfs "
            "(`/dev/shm`), where fsync returns at once. The ledger records are still written in both.")
        add("")
        add(f"| data dir | c=1 p50 / p99 ms | {p['s7_rate']} req/s p50 / p99 ms, ok | closed loop c=16 req/s, p99 ms |")
        add("| --- | --- | --- | --- |")
        h = lambda r: " **hung**" if r.get("hung") else ""  # noqa: E731
        for label, r in s7r.items():
            add(f"| {label} | {fmt(r['c1']['p50_ms'])} / {fmt(r['c1']['p99_ms'])}{h(r['c1'])} | {fmt(r['rate']['p50_ms'])} / {fmt(r['rate']['p99_ms'])}, "
                f"{r['rate']['success'] * 100:.1f}%{h(r['rate'])} | {fmt(r['c16']['rps'])}, {fmt(r['c16']['p99_ms'])}{h(r['c16'])} |")
        if "disk" in s7r and "tmpfs" in s7r and all(s7r[k]["c1"]["p50_ms"] is not None and s7r[k]["c16"]["rps"] for k in ("disk", "tmpfs")):
            d, t = s7r["disk"], s7r["tmpfs"]
            add("")
            cost = us(d["c1"]["p50_ms"] - t["c1"]["p50_ms"])
            line = (f"Flush cost at concurrency 1: {fmt(cost)} µs at p50" if cost > 0
                    else f"Flush cost at concurrency 1: none measurable (disk − tmpfs = {fmt(cost)} µs at p50)")
            if not (d["c16"].get("hung") or t["c16"].get("hung")):
                line += f"; closed-loop throughput on disk is {fmt(d['c16']['rps'] / t['c16']['rps'])}× the tmpfs figure"
            add(line + ".")
        add("")

    if results.get("S9"):
        import pg_profile
        pg_profile.report(add, results["S9"])

    if results.get("S10"):
        import formats
        formats.report(add, results["S10"])

    if s8r:
        add("## S8 policy call")
        add("")
        add(f"`{s8r['command']}` (criterion; exit {s8r['exit']}), run after every service above was stopped. "
            "A fresh instance per call, 20-message request, ~1 KB tenant config.")
        add("")
        add("| benchmark | low µs | median µs | high µs |")
        add("| --- | --- | --- | --- |")
        for name, r in s8r["results"].items():
            add(f"| {name} | {fmt(r['low_us'])} | {fmt(r['median_us'])} | {fmt(r['high_us'])} |")
        add("")

    if HANGS:
        add("## Tollgate stopped answering")
        add("")
        add("After each Tollgate load the harness sends one chat request with a 10 s timeout (twice). When neither "
            "is answered, it saves every thread's stack (gdb), kills the process and starts it again on the same "
            "data dir; the run that preceded is marked **hung** above.")
        add("")
        add("| after | instance | threads (from the stacks) | stacks |")
        add("| --- | --- | --- | --- |")
        for h in HANGS:
            add(f"| {h['where']} | {h['instance']} | {h['summary']} | `{h['stacks']}` |")
        add("")
    failed = results.get("failed")
    if failed:
        add("## Scenarios that did not complete")
        add("")
        for name, why in failed.items():
            add(f"- {name}: {why}")
        add("")
    notes = ctx.get("notes") or []
    if notes:
        add("## Notes")
        add("")
        for n in notes:
            add(f"- {n}")
        add("")
    add("## Rerun")
    add("")
    add("```sh")
    add("tests/bench/run.sh            # full run (this file), under 20 minutes on 2 cores")
    add("QUICK=1 tests/bench/run.sh    # short smoke run (~3 min), written to target/bench/RESULTS-quick.md")
    add("```")
    add("")
    add("Raw figures of this run: `tests/bench/results.json` (full profile) or `target/bench/results-quick.json`.")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------- main

RAW_KEYS = ("date", "profile", "command", "versions", "machine", "elapsed_s", "rss_idle", "p", "busy_start", "load_start", "load_end", "notes")


def render(json_path, out):
    """Writes the report again from a results JSON (to change the report without rerunning)."""
    with open(json_path) as f:
        raw = json.load(f)
    HANGS.extend(raw.get("hangs", []))
    if "S4" in raw["results"] or "S1" in raw["results"]:
        present = set(raw["results"].get("S1", {}) or raw["results"].get("S4", {}))
        for name in list(TARGETS):
            if name not in present:
                TARGETS.remove(name)
                GATEWAYS.remove(name)
    ctx = {k: raw.get(k) for k in RAW_KEYS}
    with open(out, "w") as f:
        f.write(report(ctx, raw["results"]))


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--out", required=True)
    parser.add_argument("--json-out", required=True)
    parser.add_argument("--litellm", default=os.path.join(ROOT, "target", "bench", "venv", "bin", "litellm"))
    parser.add_argument("--litellm-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--oha", default=shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. S1,S4 (default: all)")
    parser.add_argument("--command", default="tests/bench/run.sh")
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only rewrite --out from a results JSON")
    args = parser.parse_args()
    if args.render:
        render(args.render, args.out)
        return

    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    want = lambda s: not only or s in only  # noqa: E731
    p = PROFILES[args.profile]
    work = os.path.join(ROOT, "target", "bench", "run")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    started = time.time()
    ctx = {"p": p, "work": work, "profile": args.profile, "command": args.command,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "busy_start": " ".join(other_builds()), "load_start": load_average(), "notes": []}
    if ctx["busy_start"]:
        log(f"warning: other cargo/rustc processes are running ({ctx['busy_start']}); figures will be noisy")

    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    oha = Oha(args.oha)
    ctx["oha"] = oha
    litellm_python = os.path.join(os.path.dirname(args.litellm), "python")
    ctx["versions"] = {
        "tollgate": first_line(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"]),
        "rustc": first_line(["rustc", "-V"]),
        "oha": oha.version,
        "wrk": first_line(["sh", "-c", "wrk -v 2>&1 | head -1"]),
        "nginx": first_line(["sh", "-c", "nginx -v 2>&1"]),
        "LiteLLM": first_line([litellm_python, "-c", "import importlib.metadata as m; print('litellm[proxy] ' + m.version('litellm'))"])
        + f", {args.litellm_workers} uvicorn workers",
        "python": platform.python_version(),
    }
    ctx["machine"] = machine_info()
    results = {"failed": {}}
    try:
        mock, mock_port = start_mock(work)
        ctx["mock_port"] = mock_port
        targets = {"direct": {"port": mock_port, "path": "/v1/chat/completions", "auth": "bench", "service": mock}}
        log("starting nginx")
        nginx, nginx_port = start_nginx(work, [mock_port])
        targets["nginx"] = {"port": nginx_port, "path": "/v1/chat/completions", "auth": "bench", "service": nginx}
        if want("S1") or want("S3") or want("S4"):
            for name in FLOORS:
                service, port = start_floor(work, mock_port, name)
                targets[name] = {"port": port, "path": "/v1/chat/completions", "auth": "bench", "service": service}
        log("starting tollgate")
        tollgate = Tollgate("tollgate", work, os.path.join(work, "data-main"), mock_port)
        variants, _, _ = policy_variants(1)
        token = setup_tenants(tollgate, 1, variants)[0][0]
        targets["tollgate"] = {"port": tollgate.port, "path": "/v1/chat/completions", "auth": token, "service": tollgate.service}
        ctx["tollgate"] = tollgate
        log("starting LiteLLM")
        try:
            litellm, litellm_port = start_litellm(work, mock_port, args.litellm, args.litellm_workers)
            targets["litellm"] = {"port": litellm_port, "path": "/v1/chat/completions", "auth": LITELLM_KEY, "service": litellm}
        except Exception as e:  # noqa: BLE001 - recorded, the others go on
            log(f"LiteLLM unavailable: {e}")
            results["failed"]["LiteLLM"] = f"could not start: {e}"
            TARGETS.remove("litellm")
            GATEWAYS.remove("litellm")
        ctx["targets"] = targets
        for name in loaded(ctx, s1=True):
            t = targets[name]
            log(f"warm-up {name}")
            oha.run(t["port"], t["path"], t["auth"], 8, p["warmup_s"])
            oha.run(t["port"], t["path"], t["auth"], 2, 1, model=STREAM_MODEL)
            after_load(ctx, name, "warm-up", None)
        ctx["rss_idle"] = {name: targets[name]["service"].rss_kib() for name in TARGETS}
        import formats  # after this module is importable as `harness` (see the end)
        for name, fn in (("S1", s1), ("S2", s2), ("S3", s3), ("S4", s4), ("S5", s5), ("S10", formats.s10)):
            if want(name):
                try:
                    results[name] = fn(ctx)
                except Exception as e:  # noqa: BLE001 - recorded, the others go on
                    log(f"{name} failed: {e}")
                    results["failed"][name] = str(e)
        stop_all()
        mock, mock_port = start_mock(work)
        ctx["mock_port"] = mock_port
        import pg_profile  # after this module is importable as `harness` (see the end)
        for name, fn in (("S6", s6), ("S7", s7), ("S9", pg_profile.s9)):
            if want(name):
                try:
                    results[name] = fn(ctx)
                except Exception as e:  # noqa: BLE001
                    log(f"{name} failed: {e}")
                    results["failed"][name] = str(e)
        stop_all()
        if want("S8"):
            try:
                results["S8"] = s8(ctx)
            except Exception as e:  # noqa: BLE001
                log(f"S8 failed: {e}")
                results["failed"]["S8"] = str(e)
    finally:
        stop_all()
    ctx["elapsed_s"] = time.time() - started
    ctx["load_end"] = load_average()
    busy_end = other_builds()
    if ctx["busy_start"] or busy_end:
        ctx["notes"].append("Other cargo/rustc processes were running during the run; figures are noisier than on an idle machine.")
    if not results["failed"]:
        del results["failed"]
    text = report(ctx, results)
    with open(args.out, "w") as f:
        f.write(text)
    raw = {k: v for k, v in ctx.items() if k in RAW_KEYS}
    raw["results"] = results
    raw["hangs"] = HANGS
    with open(args.json_out, "w") as f:
        json.dump(raw, f, indent=1, default=str)
    log(f"wrote {args.out} and {args.json_out} in {ctx['elapsed_s'] / 60:.1f} min")


if __name__ == "__main__":
    # pg_profile imports this module as `harness`: one copy, one registry of services.
    sys.modules["harness"] = sys.modules[__name__]
    main()

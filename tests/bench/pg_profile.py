"""Scenario S9, the PostgreSQL profile: Tollgate on one shared PostgreSQL with one replica
and with three replicas behind an nginx load balancer, side by side in the same run with
nginx `proxy_pass` to the mock (the reference) and Tollgate on its embedded store.

Figures: a hot tenant (every request on one budget row) as a closed-loop sweep, 10,000
tenants spread evenly, and the database work per request (top-level statements, counted
by `pg_stat_statements`, which is one client round trip each except for pipelined ones,
and commits), background upkeep included. The server is durable like production
(`fsync`, `synchronous_commit` on; no standby), on the same disk and cores as everything
else. Run through tests/bench/run.sh (`ONLY=S9` for this scenario alone).
"""

import os
import subprocess
import time

import harness as h


def pg_bin():
    """The newest `/usr/lib/postgresql/<major>/bin` with `initdb`, or None."""
    root = "/usr/lib/postgresql"
    majors = sorted((int(d), os.path.join(root, d, "bin")) for d in (os.listdir(root) if os.path.isdir(root) else [])
                    if d.isdigit() and os.path.exists(os.path.join(root, d, "bin", "initdb")))
    return majors[-1][1] if majors else None


def as_postgres(cmd):
    """PostgreSQL refuses to run as root: run as the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    """A throwaway server for the run, stopped with the other services."""

    def __init__(self, work):
        bin_dir = pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = os.path.join(work, "postgres")
        data = os.path.join(self.dir, "data")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        init = h.run(as_postgres([os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                                  "--no-locale", "-E", "UTF8"]), timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout[-300:]} {init.stderr[-300:]}")
        self.port = h.free_port()
        self.service = h.Service("postgres", as_postgres([
            os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(self.port), "-k", self.dir,
            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "shared_buffers=256MB",
            "-c", "shared_preload_libraries=pg_stat_statements"]), work)
        self.psql = os.path.join(bin_dir, "psql")
        deadline = time.time() + 30
        while h.run([os.path.join(bin_dir, "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]).returncode != 0:
            if time.time() > deadline or not self.service.alive():
                raise RuntimeError(f"PostgreSQL did not start; see {self.service.log_path}")
            time.sleep(0.2)
        self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.version = self.sql("SHOW server_version")
        self.url = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def sql(self, query):
        out = h.run([self.psql, "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                     "-c", query], timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql {query!r}: {out.stderr[-300:]}")
        return out.stdout.strip()

    def counters(self):
        """Statements executed and transactions committed in the gateway's database so far."""
        statements, commits = self.sql(
            "SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = 'postgres'), (SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres')").split("|")
        return int(statements), int(commits)


def counted(pg, load):
    """Runs `load()` and adds the database work per answered request to its result."""
    if pg is None:
        return load()
    before = pg.counters()
    r = load()
    after = pg.counters()
    answered = max(1, round(r["rps"] * r["secs"]))
    # Both psql reads of the counters count too: take them off.
    r["statements_per_request"] = (after[0] - before[0] - 2) / answered
    r["commits_per_request"] = (after[1] - before[1] - 2) / answered
    return r


def s9(ctx):
    p = ctx["p"]
    work, mock_port = ctx["work"], ctx["mock_port"]
    pg = Postgres(work)
    variants, _, _ = h.policy_variants(1)
    out = {"postgres": pg.version, "tenants": p["s9_tenants"], "spread_conc": p["s9_spread_conc"], "secs": p["s9_s"]}

    _, nginx_port = h.start_nginx(work, [mock_port], name="nginx-s9")
    sled = h.Tollgate("tollgate-s9-sled", work, os.path.join(work, "data-s9-sled"), mock_port)
    sled_token = h.setup_tenants(sled, 1, variants)[0][0]
    replicas = [h.Tollgate(f"tollgate-s9-pg{i}", work, os.path.join(work, f"data-s9-pg{i}"), mock_port, store_url=pg.url)
                for i in range(3)]
    _, lb_port = h.start_nginx(work, [r.port for r in replicas], name="nginx-s9-lb", health_path="/healthz")
    h.log(f"S9: setting up {p['s9_tenants']:,} tenants on PostgreSQL through replica 0")
    tokens, out["setup"] = h.setup_tenants(replicas[0], p["s9_tenants"], variants, limit_s=p["s9_setup_limit_s"])
    tokens_file = os.path.join(work, "tokens-s9.txt")
    with open(tokens_file, "w") as f:
        f.write("\n".join(tokens) + "\n")

    targets = [
        ("nginx", nginx_port, "bench", None, []),
        ("tollgate, sled", sled.port, sled_token, None, [sled]),
        ("tollgate, PostgreSQL, 1 replica", replicas[0].port, tokens[0], pg, replicas[:1]),
        ("tollgate, PostgreSQL, 3 replicas behind nginx", lb_port, tokens[0], pg, replicas),
    ]
    out["hot"], out["spread"] = {}, {}
    for label, port, token, db, instances in targets:
        def hung(where, r, token=token, instances=instances):
            return any(tg.check(token, where, r) for tg in instances)

        h.log(f"S9 {label}: warm-up")
        ctx["oha"].run(port, "/v1/chat/completions", token, 8, p["warmup_s"])
        out["hot"][label] = h.closed_loop(
            lambda conc, port=port, token=token, db=db: counted(db, lambda: ctx["oha"].run(port, "/v1/chat/completions", token, conc, p["s9_s"])),
            p["s9_conc"], f"S9 hot tenant, {label}", hung=lambda conc, r, label=label: hung(f"S9 hot tenant, {label}, {conc} connections", r))
        if db is not None:
            h.log(f"S9 {label}: {p['s9_tenants']:,} tenants spread evenly, {p['s9_spread_conc']} connections")
            h.wrk_zipf(port, tokens_file, p["s9_spread_conc"], max(1, p["warmup_s"]), exponent=0.0)
            r = counted(db, lambda port=port: h.wrk_zipf(port, tokens_file, p["s9_spread_conc"], p["s9_s"], exponent=0.0))
            hung(f"S9 spread tenants, {label}", r)
            out["spread"][label] = r
    out["rss_kib"] = {r.name: r.service.rss_kib() for r in replicas}
    out["database_bytes"] = int(pg.sql("SELECT pg_database_size('postgres')"))
    for service in [sled, *replicas]:
        service.stop()
    return out


def report(add, s9r):
    """The S9 section of RESULTS.md."""
    fmt, mib = h.fmt, h.mib
    add("## S9 PostgreSQL profile (several replicas, one database)")
    add("")
    add(f"One PostgreSQL {s9r['postgres']} server on this machine (durable: `fsync` and `synchronous_commit` on, no "
        f"standby), {s9r['tenants']:,} tenants set up through replica 0 "
        f"({s9r['setup']['tenants_s']:.0f} s, {s9r['setup']['tenants_per_s']:.0f} tenants/s), every tenant on the stock "
        f"`default` policy with a monthly budget and a sealed credential. Three `tollgate serve` replicas on that "
        f"database (`[store] url`), each with its own data dir; \"3 replicas\" goes through an nginx round-robin load "
        f"balancer. nginx `proxy_pass` to the mock and Tollgate on its embedded store run in the same run as references. "
        f"Database work is counted by `pg_stat_statements` (top-level statements: one client round trip each) and "
        f"`pg_stat_database.xact_commit` over each load, background upkeep of all three replicas included "
        f"(lease renewal, change-feed poll, settlement batches).")
    add("")
    add(f"**Hot tenant** (every request reserves and settles on the same budget rows), `oha` closed loop for "
        f"{s9r['secs']} s per level:")
    add("")
    add("| target | best req/s at p99 < 10 ms (connections) | peak req/s (connections, p99 ms) | c=1 p50 / p99 ms | statements / request | commits / request |")
    add("| --- | --- | --- | --- | --- | --- |")
    nginx_best = None
    for label, sweep in s9r["hot"].items():
        best, peak, first = sweep["best_under_10ms"], sweep["peak"], sweep["levels"][0]
        if label == "nginx":
            nginx_best = best["rps"] if best else None
        add(f"| {label} | {fmt(best['rps']) if best else '—'} ({best['conc'] if best else '—'}) | "
            f"{fmt(peak['rps'])} ({peak['conc']}, {fmt(peak['p99_ms'])}) | {fmt(first['p50_ms'])} / {fmt(first['p99_ms'])} | "
            f"{fmt(best.get('statements_per_request') if best else peak.get('statements_per_request'))} | "
            f"{fmt(best.get('commits_per_request') if best else peak.get('commits_per_request'))} |")
    add("")
    add(f"**{s9r['tenants']:,} tenants spread evenly** (`wrk -c{s9r['spread_conc']} -s tests/bench/zipf.lua`, exponent 0, "
        f"a token drawn uniformly per request), {s9r['secs']} s:")
    add("")
    add("| target | req/s | p50 ms | p99 ms | ok | statements / request | commits / request |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in s9r["spread"].items():
        add(f"| {label} | {fmt(r['rps'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['success'] * 100:.1f}% | "
            f"{fmt(r.get('statements_per_request'))} | {fmt(r.get('commits_per_request'))} |")
    add("")
    if nginx_best:
        ratios = []
        for label, sweep in s9r["hot"].items():
            if label != "nginx" and sweep["best_under_10ms"]:
                ratios.append(f"{label} {fmt(sweep['best_under_10ms']['rps'] / nginx_best)}×")
        add(f"Hot tenant throughput at p99 < 10 ms against nginx's: {', '.join(ratios)}. RSS of each replica at the end: "
            f"{', '.join(f'{fmt(mib(v))} MiB' for v in s9r['rss_kib'].values())}; database size "
            f"{fmt(s9r['database_bytes'] / 1048576)} MiB.")
        add("")

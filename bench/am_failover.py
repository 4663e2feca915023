#!/usr/bin/env python3
"""The Active Manager's failover from a crash, and what its probes cost.

Two real Dovecot servers holding copies of DB01, a real etcd, one mailfront node probing them
([health] interval 1 s, fall 2 by default) and leading the array. Each run SIGKILLs every process
of the server hosting DB01 and measures, from just before the kill:

  detect  the node's `backend down` log line for that server;
  write   its `database moved` line (the etcd transaction is done when it is logged);
  login   the first successful IMAP login of alice (a client trying every 20 ms) that lands on
          the other server.

The killed server is started again and seen up before the next run, which kills the other one
(hold-down is 1 s here so that DB01 may move back). Prints each run and p50/p99.

Then the probes' cost: CPU time of an idle node probing 10 servers (every endpoint, greetings)
against the same node without [health], over --cost-seconds each; printed as CPU ms per minute.

    bench/am_failover.py [--repeat 7] [--interval 1s] [--fall 2] [--cost-seconds 60]
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import re
import statistics
import sys
import time
import urllib.request
from datetime import datetime

from benchlab import BenchLab, lab

import lab.etcd  # noqa: E402  (scripts/ is on sys.path through benchlab)

ALICE = lab.User("alice@example.com", "DB01")
STAMP = re.compile(r"^(\S+Z)\s")


def log_time(log: str, pattern: str, after: float) -> float | None:
    """The wall-clock time of the first log line matching `pattern` logged after `after`."""
    for line in log.splitlines():
        found = STAMP.match(line)
        if not found or not re.search(pattern, line):
            continue
        at = datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()
        if at >= after:
            return at
    return None


def login_lands_on(port: int, log_path, server: str) -> bool:
    try:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=5)
        client.login(ALICE.address, ALICE.password)
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        return False
    proxied = re.findall(r"session proxied .*user=alice@example.com .*backend=(\S+)", log_path.read_text())
    return bool(proxied) and proxied[-1] == server


def wait(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(what)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def failover_runs(bench: BenchLab, etcd: lab.etcd.Etcd, repeat: int, timeout: float) -> list[dict]:
    log_path = bench.root / "mailfront.log"
    runs = []
    for run in range(repeat):
        raw = (etcd.get("/mailfront/databases/DB01") or "").strip()
        victim = json.loads(raw)["active"] if raw.startswith("{") else raw
        survivor = "mbx2" if victim == "mbx1" else "mbx1"
        wait(lambda: all(state == "up" for state in servers_state(bench).values()), 30, "every server up")
        killed_at = time.time()
        bench.servers[victim].kill()
        wait(lambda: login_lands_on(bench.imap_port, log_path, survivor), timeout, f"alice on {survivor}")
        login = time.time() - killed_at
        log = log_path.read_text()
        detect = log_time(log, rf"backend down .*server={victim}\b", killed_at)
        written = log_time(log, rf"database moved .*database=DB01 from={victim} to={survivor}", killed_at)
        result = {"killed": victim, "detect_s": round(detect - killed_at, 3) if detect else None,
                  "write_s": round(written - killed_at, 3) if written else None, "login_s": round(login, 3)}
        print(f"run {run + 1}: {json.dumps(result)}", flush=True)
        runs.append(result)
        bench.servers[victim].start()
    return runs


def servers_state(bench: BenchLab) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{bench.admin_port}/servers", timeout=5) as response:
        body = json.loads(response.read())
    return {s["server"]: "up" if all(st == "up" for _, st in s["endpoints"]) else "down"
            for s in body["servers"]}


def probe_cost(bench: BenchLab, seconds: float, health: dict) -> dict:
    """CPU ms per minute of an idle node with 10 probed servers, and of the same without probes."""
    results = {}
    for label, sections in (("no probes", {}), ("10 servers probed", {"health": health})):
        root = lab.reset_dir(bench.root / f"cost-{len(sections)}")
        servers = [lab.ServerEntry(f"p{i:02d}", bench.servers["mbx1" if i % 2 else "mbx2"].ports)
                   for i in range(10)]
        config = lab.write_toml(root / "mailfront.toml", lab.node_config(
            node="cost", servers=servers, users_file=bench.root / "users.toml",
            locations_file=root / "locations.toml", cert=bench.root / "tls" / "cert.pem",
            key=bench.root / "tls" / "key.pem", master_password_file=bench.root / "secrets" / "master.pw",
            listeners=[lab.listener(None, "imap", lab.free_port(), "none", allow_plaintext_auth=True)],
            sections=sections))
        lab.write_locations(root / "locations.toml", {"DB01": "p00"})
        node = lab.Mailfront(bench.binary, config, root / "mailfront.log")
        node.start()
        try:
            time.sleep(3)  # past start-up
            before, started = cpu_seconds(node.process.pid), time.monotonic()
            time.sleep(seconds)
            used = cpu_seconds(node.process.pid) - before
            results[label] = round(used * 1000 * 60 / (time.monotonic() - started), 1)
        finally:
            node.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--fall", type=int, default=2)
    parser.add_argument("--cost-seconds", type=float, default=60)
    parser.add_argument("--profile", default=os.environ.get("MAILFRONT_PROFILE", "release"))
    args = parser.parse_args()

    lab.ensure_installed("etcd")
    etcd = lab.etcd.Etcd(lab.reset_dir(lab.lab_root("bench-am-etcd")), lab.free_port(), lab.free_port())
    etcd.start()
    health = {"interval": args.interval, "timeout": "500ms", "fall": args.fall, "rise": 2}
    try:
        etcd.put_active("DB01", "mbx1")
        with BenchLab("bench-am", [ALICE], profile=args.profile, location=etcd.location_config(timeout="1s"),
                      databases={"DB01": ["mbx1", "mbx2"]},
                      sections={"health": health,
                                "active_manager": {"lease_ttl": "3s", "hold_down": "1s"},
                                "timeouts": {"backend_connect": "2s"}}) as bench:
            wait(lambda: "active_manager_leader 1" in lab_metrics(bench), 30, "the node leads")
            runs = failover_runs(bench, etcd, args.repeat, timeout=30)
            cost = probe_cost(bench, args.cost_seconds, health)
    finally:
        etcd.stop()
    summary = {"interval": args.interval, "fall": args.fall, "runs": len(runs)}
    for key in ("detect_s", "write_s", "login_s"):
        values = [r[key] for r in runs if r[key] is not None]
        summary[key] = {"p50": round(statistics.median(values), 3), "p99": round(percentile(values, 0.99), 3)}
    summary["probe_cpu_ms_per_minute"] = cost
    print(json.dumps(summary))
    return 0


def lab_metrics(bench: BenchLab) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{bench.admin_port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())

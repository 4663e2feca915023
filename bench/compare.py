#!/usr/bin/env python3
"""Side by side: mailfront against its peers on the same Dovecot backend, in one run, in turns.

    bench/compare.py                   every scenario, plain and TLS, 3 repeats (about 30 minutes)
    bench/compare.py --quick           a smoke run for scripts/test (well under a minute): tiny sizes,
                                       one repeat, no TLS variants; non-zero if a peer does not start
                                       or any run reports an error
    bench/compare.py --scale           idle sessions at 10k, 50k and 100k (direct, mailfront, nginx)
    bench/compare.py --scenarios login-storm,latency --peers mailfront,nginx --repeat 5

The peers (bench/peers.py): direct (the Dovecot backend itself, the limit), mailfront, nginx's mail
proxy, Dovecot as a proxy, HAProxy in TCP mode. The load comes from `mailfront-bench` (crate
crates/loadgen, built with `cargo build --release -p mailfront-loadgen`). Runs go round-robin
within each repeat (direct, mailfront, nginx, dovecot-proxy, haproxy, then again), so that a
noisy machine hurts every peer alike; the report gives medians over the repeats and ratios to
direct and to mailfront.

Measured from /proc for the peer's own processes only (its whole process tree; for `direct`,
the backend's): CPU (utime + stime, exited children included) over the steady part of each run,
as CPU per operation; for the idle scenario the peer's PSS (smaps_rollup) before and with the
sessions open, as KiB per idle session, and the kernel's TCP socket memory (/proc/net/sockstat)
separately. The backend's CPU is reported alongside for the proxies (what each costs the
mailbox server), never mixed into theirs.

Results: bench/results/<time>-compare.json and .md (the markdown is printed too); --quick writes
to the lab directory instead. Scratch: $MAILFRONT_LAB_DIR/bench-compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlab import ROOT, fd_hard_limit, lab, pss_kib, socket_slab_kib, sockstat_tcp_mem_pages
from peers import (ALL_PEERS, FETCH_USER, SINK_USER, Peers, bench_users, check_all, check_imap,
                   per_process_session_ceiling, write_loadgen_users)

SCENARIOS = ("login-storm", "idle", "latency", "throughput", "smtp", "https")
IMAP_SCENARIOS = ("login-storm", "idle", "latency", "throughput")
SCALE_PEERS = ("direct", "mailfront", "nginx")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# What each scenario's table leads with: (label, unit of CPU per operation).
HEADLINE = {
    "login-storm": ("logins/s", "µs CPU/login"),
    "latency": ("NOOPs/s", "µs CPU/NOOP"),
    "throughput": ("MB/s", "ms CPU/GB"),
    "idle": ("KiB/session", "µs CPU/session opened"),
    "smtp": ("messages/s", "µs CPU/message"),
    "https": ("requests/s", "µs CPU/request"),
}


def log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc


def cpu_of(pids: list[int]) -> float:
    """CPU time (user + system) of some processes: each live one's own time plus what its exited,
    reaped children used (cutime + cstime), so a worker that came and went within a run still
    counts. Take the difference of two readings."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def trees_cpu(roots: dict[str, int]) -> dict[str, float]:
    children = lab.children_by_parent()
    return {name: cpu_of(lab.process_tree(pid, children)) for name, pid in roots.items()}


def trees_pss(roots: dict[str, int]) -> dict[str, int]:
    children = lab.children_by_parent()
    out = {}
    for name, root in roots.items():
        total = 0
        for pid in lab.process_tree(root, children):
            try:
                total += pss_kib(pid)
            except (OSError, RuntimeError):
                pass
        out[name] = total
    return out


def sockstat() -> dict[str, int]:
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}
    return {}


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


class CpuSampler(threading.Thread):
    """Reads the CPU time of some process trees every `interval` seconds, so that CPU can be
    taken over the steady part of a run (not the logins that set up the latency scenario's
    sessions, not the teardown)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.25):
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.monotonic(), trees_cpu(self.roots)))
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.samples.append((time.monotonic(), trees_cpu(self.roots)))

    def total(self, name: str) -> float:
        return self.samples[-1][1][name] - self.samples[0][1][name]

    def rate(self, name: str, t0: float, t1: float) -> float | None:
        """CPU seconds per second for `name` between the samples nearest inside [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.2:
            return None
        (ta, a), (tb, b) = inside[0], inside[-1]
        return (b[name] - a[name]) / (tb - ta)


# ---------------------------------------------------------------------------------------------
# The load generator


def loadgen_binary(args) -> Path:
    if args.loadgen:
        return Path(args.loadgen)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "release" / "mailfront-bench"
    if not os.environ.get("MAILFRONT_NO_BUILD"):
        subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "mailfront-loadgen"], cwd=ROOT, check=True)
    if not binary.exists():
        raise SystemExit(f"no load generator at {binary} (cargo build --release -p mailfront-loadgen)")
    return binary


class Context:
    """Everything a run needs: the lab, the load generator, the settings."""

    def __init__(self, args, peers: Peers, loadgen: Path, root: Path):
        self.args = args
        self.peers = peers
        self.loadgen = loadgen
        self.root = root
        self.users_file = write_loadgen_users(root / "users.txt", peers.users)
        self.fetch_users_file = write_loadgen_users(root / "fetch-users.txt", [FETCH_USER])
        self.runs_dir = root / "runs"
        self.runs_dir.mkdir(exist_ok=True)
        self.counter = 0

    def out_file(self, label: str) -> Path:
        self.counter += 1
        return self.runs_dir / f"{self.counter:04d}-{label}.json"


def target_for(peer, scenario: str, tls: bool) -> tuple[int, list[str]]:
    """The port and extra arguments of a scenario against a peer."""
    if scenario == "smtp":
        return peer.smtp, []
    if scenario == "https":
        extra = ["--path", peer.https.path]
        if peer.name == "mailfront":
            extra.append("--basic")
        return peer.https.port, extra
    return (peer.imaps if tls else peer.imap), []


def scenario_args(ctx: Context, scenario: str) -> list[str]:
    a = ctx.args
    if scenario == "login-storm":
        return ["--concurrency", str(a.login_concurrency), "--users", str(ctx.users_file)]
    if scenario == "latency":
        return ["--concurrency", str(a.latency_concurrency), "--sessions", str(a.latency_sessions),
                "--users", str(ctx.users_file)]
    if scenario == "throughput":
        return ["--concurrency", str(a.throughput_concurrency), "--fetch-size", str(a.fetch_size),
                "--users", str(ctx.fetch_users_file)]
    if scenario == "smtp":
        return ["--concurrency", str(a.smtp_concurrency), "--rcpt", SINK_USER.address,
                "--message-size", str(a.message_size)]
    if scenario == "https":
        return ["--concurrency", str(a.https_concurrency), "--users", str(ctx.users_file)]
    raise ValueError(scenario)


def backend_root(ctx: Context, scenario: str) -> int:
    """The process tree that serves a scenario behind the peers (its CPU is reported apart)."""
    if scenario == "https":
        return ctx.peers.web.server.process.pid
    pid = ctx.peers.backend.pid()
    assert pid is not None
    return pid


def peer_root(ctx: Context, peer, scenario: str) -> int:
    if peer.name == "direct" and scenario == "https":
        return ctx.peers.web.server.process.pid
    return peer.root_pid()


def wait_quiet(inuse_before: int, timeout: float = 60.0) -> None:
    """Until the TCP sockets the last run opened are gone again (sessions torn down on every
    side), so that the next peer starts on a quiet machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sockstat().get("inuse", 0) <= inuse_before + 20:
            break
        time.sleep(0.1)
    time.sleep(0.3)


def read_result(path: Path, stdout: str) -> dict | None:
    for text in (path.read_text() if path.exists() else "", stdout):
        for candidate in (text.strip(), *reversed(text.strip().splitlines())):
            try:
                value = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(value, dict) and "scenario" in value:
                return value
    return None


def run_timed(ctx: Context, peer, scenario: str, tls: bool, repeat: int) -> dict:
    """One run of a timed scenario (everything but idle)."""
    a = ctx.args
    port, extra = target_for(peer, scenario, tls)
    out = ctx.out_file(f"{scenario}-{'tls' if tls else 'plain'}-{peer.name}")
    argv = [str(ctx.loadgen), scenario, "--target", f"127.0.0.1:{port}", "--duration", str(a.duration),
            "--warmup", str(a.warmup), "--output", str(out), *scenario_args(ctx, scenario), *extra]
    if tls:
        argv.append("--tls")
    roots = {"peer": peer_root(ctx, peer, scenario), "backend": backend_root(ctx, scenario)}
    inuse = sockstat().get("inuse", 0)
    sampler = CpuSampler(roots)
    sampler.start()
    started = time.monotonic()
    timeout = a.warmup + a.duration + 120 + a.latency_sessions / 50
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, code = (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"), -1
    ended = time.monotonic()
    sampler.stop()
    result = read_result(out, stdout)
    run = {"scenario": scenario, "tls": tls, "peer": peer.name, "repeat": repeat, "argv": argv,
           "exit_code": code, "wall_s": round(ended - started, 3), "loadgen": result}
    if code != 0 or result is None:
        run["failure"] = f"mailfront-bench exited {code}: {stderr.strip()[-1500:]}"
    else:
        duration = float(result.get("duration_s") or a.duration)
        # The steady part: the measured duration ends just before the load generator exits
        # (its teardown is short); keep clear of both edges.
        tail = 0.2 + 0.1 * duration
        t1 = ended - tail
        t0 = t1 - 0.8 * duration
        for who in ("peer", "backend"):
            rate = sampler.rate(who, t0, t1)
            whole = sampler.total(who)
            run[f"{who}_cpu_s_total"] = round(whole, 3)
            if rate is None:  # too short a run to find a steady part: the whole run instead
                rate = whole / max(duration, 1e-3)
            run[f"{who}_cpu_rate"] = round(rate, 4)
            run[f"{who}_cpu_per_op"] = cpu_per_op(scenario, rate, result)
        run["errors"] = int(result.get("errors") or 0)
        if not result.get("ops"):
            run["failure"] = "no operations completed"
    run["headline"] = headline_value(scenario, run)
    wait_quiet(inuse)
    return run


def cpu_per_op(scenario: str, rate: float, result: dict) -> float | None:
    """µs of CPU per operation; for throughput, ms of CPU per GB moved."""
    if scenario == "throughput":
        duration = float(result.get("duration_s") or 0)
        gb_per_s = (float(result.get("bytes") or 0) / duration / 1e9) if duration else 0.0
        if not gb_per_s and result.get("mb_per_s"):
            gb_per_s = float(result["mb_per_s"]) / 1000
        return round(rate / gb_per_s * 1000, 2) if gb_per_s else None
    ops = float(result.get("ops_per_s") or 0)
    return round(rate / ops * 1e6, 2) if ops else None


def headline_value(scenario: str, run: dict) -> float | None:
    if scenario == "idle":
        return run.get("kib_per_session")
    result = run.get("loadgen") or {}
    if scenario == "throughput":
        return result.get("mb_per_s")
    return result.get("ops_per_s")


def restart_for_idle(ctx: Context, peer) -> None:
    """A fresh backend and a fresh peer before every idle run: allocators keep the memory of
    earlier sessions for later ones, which would hide the next run's growth."""
    if peer.name != "direct":
        peer.stop()
    ctx.peers.backend.start()
    if peer.name != "direct":
        peer.start()
    # Warm up (first TLS handshake, lazily built state) before the baseline.
    for tls in (False, True):
        check_imap(peer.imaps if tls else peer.imap, tls, ctx.peers.users[0])
    time.sleep(0.5)


def start_idle(ctx: Context, peer, tls: bool, sessions: int, source: str | None, label: str):
    port = peer.imaps if tls else peer.imap
    out = ctx.out_file(label)
    ready = out.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    argv = [str(ctx.loadgen), "idle", "--target", f"127.0.0.1:{port}", "--sessions", str(sessions),
            "--users", str(ctx.users_file), "--ready-file", str(ready), "--hold", "3600",
            "--concurrency", str(ctx.args.idle_concurrency), "--output", str(out)]
    if tls:
        argv.append("--tls")
    if source:
        argv += ["--sources", source]
    stdout = open(out.with_suffix(".stdout"), "w")
    stderr = open(out.with_suffix(".stderr"), "w")
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    stdout.close()
    stderr.close()
    return {"proc": proc, "argv": argv, "out": out, "ready": ready}


def wait_ready(handles: list[dict], timeout: float) -> str | None:
    """None once every load generator has written its ready file; else what went wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [h for h in handles if not h["ready"].exists()]
        if not pending:
            return None
        for h in pending:
            if h["proc"].poll() is not None:
                return f"mailfront-bench exited {h['proc'].returncode} before READY: " + \
                    h["out"].with_suffix(".stderr").read_text(errors="replace")[-1500:]
        time.sleep(0.1)
    return f"not READY within {timeout:.0f}s"


def finish_idle(handles: list[dict]) -> tuple[list[dict], list[str]]:
    results, failures = [], []
    for h in handles:
        if h["proc"].poll() is None:
            h["proc"].send_signal(signal.SIGTERM)
    for h in handles:
        try:
            code = h["proc"].wait(timeout=120)
        except subprocess.TimeoutExpired:
            h["proc"].kill()
            code = h["proc"].wait()
        stdout = h["out"].with_suffix(".stdout").read_text(errors="replace")
        result = read_result(h["out"], stdout)
        if result is None:
            failures.append(f"mailfront-bench exited {code} without a result: "
                            + h["out"].with_suffix(".stderr").read_text(errors="replace")[-1500:])
        else:
            results.append(result)
    return results, failures


def ready_counts(handles: list[dict]) -> tuple[int, int]:
    """opened and errors from the ready files ("READY opened=N errors=E")."""
    opened = errors = 0
    for h in handles:
        text = h["ready"].read_text() if h["ready"].exists() else ""
        text += h["out"].with_suffix(".stdout").read_text(errors="replace") if h["out"].with_suffix(".stdout").exists() else ""
        for line in text.splitlines():
            if "READY" in line:
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                opened += int(fields.get("opened", 0))
                errors += int(fields.get("errors", 0))
                break
    return opened, errors


def run_idle(ctx: Context, peer, tls: bool, repeat: int, sessions: int, sources: list[str] | None = None) -> dict:
    """Opens `sessions` idle sessions (split over several load generators, each under the
    descriptor limit, each from its own source address when `sources` is given), measures the
    peer's PSS and the kernel's TCP memory with them open, then lets them go."""
    restart_for_idle(ctx, peer)
    roots = {"peer": peer.root_pid(), "backend": backend_root(ctx, "idle")}
    inuse = sockstat().get("inuse", 0)
    pss_before = trees_pss(roots)
    sock_before = sockstat_tcp_mem_pages()
    slab_before = socket_slab_kib()
    cpu_before = trees_cpu(roots)
    per_process = max(1, min(ctx.args.sessions_per_loadgen, per_process_session_ceiling() * 2 - 400))
    n = max(1, math.ceil(sessions / per_process))
    shares = [sessions // n + (1 if i < sessions % n else 0) for i in range(n)]
    label = f"idle-{'tls' if tls else 'plain'}-{peer.name}"
    started = time.monotonic()
    handles = [start_idle(ctx, peer, tls, share, sources[i % len(sources)] if sources else None, f"{label}-{i}")
               for i, share in enumerate(shares)]
    problem = wait_ready(handles, timeout=60 + sessions / 100)
    ready_s = time.monotonic() - started
    run = {"scenario": "idle", "tls": tls, "peer": peer.name, "repeat": repeat, "sessions": sessions,
           "loadgens": len(handles), "argv": handles[0]["argv"], "ready_s": round(ready_s, 2)}
    if problem is None:
        time.sleep(ctx.args.settle)
        cpu_after = trees_cpu(roots)
        pss_after = trees_pss(roots)
        sock_after = sockstat_tcp_mem_pages()
        slab_after = socket_slab_kib()
        opened, errors = ready_counts(handles)
        run.update({
            "opened": opened,
            "errors": errors,
            "pss_before_kib": pss_before["peer"], "pss_after_kib": pss_after["peer"],
            "backend_pss_before_kib": pss_before["backend"], "backend_pss_after_kib": pss_after["backend"],
            "tcp_mem_delta_kib": (sock_after - sock_before) * PAGE_KIB,
            "socket_slab_delta_kib": slab_after - slab_before,
            "tcp_inuse_delta": sockstat().get("inuse", 0) - inuse,
            "peer_cpu_s": round(cpu_after["peer"] - cpu_before["peer"], 3),
            "backend_cpu_s": round(cpu_after["backend"] - cpu_before["backend"], 3),
        })
        if opened:
            run["kib_per_session"] = round((pss_after["peer"] - pss_before["peer"]) / opened, 2)
            run["backend_kib_per_session"] = round((pss_after["backend"] - pss_before["backend"]) / opened, 2)
            run["tcp_kib_per_session"] = round(run["tcp_mem_delta_kib"] / opened, 3)
            run["slab_kib_per_session"] = round(run["socket_slab_delta_kib"] / opened, 2)
            run["peer_cpu_per_op"] = round(run["peer_cpu_s"] / opened * 1e6, 2)
            run["backend_cpu_per_op"] = round(run["backend_cpu_s"] / opened * 1e6, 2)
    results, failures = finish_idle(handles)
    run["loadgen"] = results[0] if len(results) == 1 else {"parts": results}
    if problem is None and not failures and run.get("opened", 0) < sessions:
        failures.append(f"opened {run.get('opened', 0):,} of {sessions:,} sessions")
    if problem or failures:
        run["failure"] = "; ".join(filter(None, [problem, *failures]))
        run.setdefault("errors", sum(int(r.get("errors") or 0) for r in results))
    run["headline"] = headline_value("idle", run)
    wait_quiet(inuse, timeout=120)
    return run


# ---------------------------------------------------------------------------------------------
# Summaries


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    """Per scenario and TLS variant, per peer: medians over the repeats, and ratios of the
    headline metric to direct and to mailfront."""
    summary: dict[str, dict] = {}
    for run in runs:
        key = f"{run['scenario']}{' tls' if run['tls'] else ''}"
        summary.setdefault(key, {}).setdefault(run["peer"], []).append(run)
    out = {}
    for key, by_peer in summary.items():
        rows = {}
        for peer, rs in by_peer.items():
            lg = [r.get("loadgen") or {} for r in rs]
            lat = [x.get("latency_us") or {} for x in lg]
            rows[peer] = {
                "runs": len(rs),
                "headline": median([r.get("headline") for r in rs]),
                "ops_per_s": median([x.get("ops_per_s") for x in lg]),
                "mb_per_s": median([x.get("mb_per_s") for x in lg]),
                "p50_us": median([x.get("p50") for x in lat]),
                "p99_us": median([x.get("p99") for x in lat]),
                "p999_us": median([x.get("p999") for x in lat]),
                "cpu_per_op": median([r.get("peer_cpu_per_op") for r in rs]),
                "backend_cpu_per_op": median([r.get("backend_cpu_per_op") for r in rs]),
                "kib_per_session": median([r.get("kib_per_session") for r in rs]),
                "backend_kib_per_session": median([r.get("backend_kib_per_session") for r in rs]),
                "tcp_kib_per_session": median([r.get("tcp_kib_per_session") for r in rs]),
                "slab_kib_per_session": median([r.get("slab_kib_per_session") for r in rs]),
                "opened": median([r.get("opened") for r in rs]),
                "errors": sum(int(r.get("errors") or 0) for r in rs),
                "failures": [r["failure"] for r in rs if r.get("failure")],
            }
        for peer, row in rows.items():
            for ref in ("direct", "mailfront"):
                base = rows.get(ref, {}).get("headline")
                row[f"x_{ref}"] = round(row["headline"] / base, 3) if base and row["headline"] is not None else None
        out[key] = rows
    return out


def fmt(value, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and digits == 0 and abs(value) < 10:
        digits = 2
    return f"{value:,.{digits}f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# mailfront side by side — {report['started']}", ""]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}, "
              f"{m['os']}; RLIMIT_NOFILE hard {m['nofile_hard']}; load average at start {m['loadavg_start']}, "
              f"at end {m.get('loadavg_end', '—')}.", ""]
    lines += ["Peers:", ""]
    for name, p in report["peers"].items():
        lines.append(f"- **{name}** ({p['version']}): {p['description']}")
    lines.append(f"- backend: {report['backend']}")
    lines += ["", "Fairness: " + report["fairness"], ""]
    s = report["settings"]
    lines += [f"Settings: {s['repeat']} repeat(s), round-robin per repeat; {s['duration']} s per timed run "
              f"(+{s['warmup']} s warm-up); login-storm C={s['login_concurrency']}; idle N={s['idle_sessions']}; "
              f"latency {s['latency_sessions']} sessions C={s['latency_concurrency']}; throughput "
              f"C={s['throughput_concurrency']} on a {s['fetch_size']:,}-byte message; smtp C={s['smtp_concurrency']} "
              f"{s['message_size']:,}-byte messages; https C={s['https_concurrency']}. Medians over the repeats; "
              "CPU is the peer's own process tree over the steady part of each run; × direct and "
              "× mailfront compare the first column.", ""]
    for key, rows in report["summary"].items():
        scenario = key.split()[0]
        label, cpu_unit = HEADLINE[scenario]
        lines += [f"## {key}", ""]
        if scenario == "idle":
            lines += [f"| peer | sessions | {label} (PSS) | kernel TCP buffers KiB/session | kernel socket objects "
                      f"KiB/session | {cpu_unit} | backend KiB/session | × direct | × mailfront | errors |",
                      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
            for peer, r in rows.items():
                lines.append(f"| {peer} | {fmt(r['opened'])} | {fmt(r['headline'], 1)} | {fmt(r['tcp_kib_per_session'], 2)} "
                             f"| {fmt(r['slab_kib_per_session'], 1)} | {fmt(r['cpu_per_op'])} | {fmt(r['backend_kib_per_session'], 1)} | {fmt(r['x_direct'], 2)} "
                             f"| {fmt(r['x_mailfront'], 2)} | {r['errors']} |")
        else:
            lines += [f"| peer | {label} | p50 µs | p99 µs | p99.9 µs | {cpu_unit} | backend {cpu_unit} | "
                      "× direct | × mailfront | errors |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
            for peer, r in rows.items():
                lines.append(f"| {peer} | {fmt(r['headline'])} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | "
                             f"{fmt(r['p999_us'])} | {fmt(r['cpu_per_op'], 1)} | {fmt(r['backend_cpu_per_op'], 1)} | "
                             f"{fmt(r['x_direct'], 2)} | {fmt(r['x_mailfront'], 2)} | {r['errors']} |")
        failures = [f"{peer}: {f}" for peer, r in rows.items() for f in r["failures"]]
        if failures:
            lines += ["", "Failures:", ""] + [f"- {f[:400]}" for f in failures]
        lines.append("")
    if report.get("scale"):
        lines += ["## scale: idle sessions", "",
                  "| peer | target | opened | errors | peer PSS MiB | KiB/session | kernel TCP MiB | "
                  "CPU µs/session opened | backend PSS MiB | s to open | note |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
        for r in report["scale"]:
            lines.append(f"| {r['peer']} | {r['sessions']:,} | {fmt(r.get('opened'))} | {r.get('errors', '—')} | "
                         f"{fmt((r.get('pss_after_kib') or 0) / 1024, 1)} | {fmt(r.get('kib_per_session'), 1)} | "
                         f"{fmt((r.get('tcp_mem_delta_kib') or 0) / 1024, 1)} | {fmt(r.get('peer_cpu_per_op'))} | "
                         f"{fmt((r.get('backend_pss_after_kib') or 0) / 1024, 1)} | {fmt(r.get('ready_s'), 1)} | "
                         f"{(r.get('note') or r.get('failure') or '')[:300]} |")
        lines.append("")
    if report.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    try:
        debian = "Debian " + Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = platform.platform()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(total_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "os": debian, "nofile_hard": fd_hard_limit(),
            "loadavg_start": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


FAIRNESS = ("every authenticating peer checks a plaintext password from its own user table (mailfront's "
            "users file with {PLAIN}, the proxy Dovecot's passwd-file with {PLAIN}, nginx's map), so the "
            "front door is measured, not a password hash; every proxy logs in to the backend with the "
            "user's own password (mailfront: login method `passthrough`, unless --login-method master); "
            "the same users and the same Dovecot backend (and the same static web server for HTTPS) for "
            "all; every peer gets 2 worker processes or threads (mailfront: 2 session workers, one per core; nginx: "
            "worker_processes 2; Dovecot proxy: 2 imap-login processes; HAProxy: nbthread 2); the same "
            "ECDSA P-256 certificate and TLS 1.3 everywhere; logging reduced to errors where the peer "
            "allows (mailfront log.level = warn; nginx error_log error, access_log off; Dovecot "
            "info_log_path = /dev/null; HAProxy no log). The load generator runs on the same 2 cores.")


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default=",".join(ALL_PEERS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds measured per timed run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-tls", action="store_true", help="skip the TLS variants")
    p.add_argument("--users", type=int, default=100, help="how many users the load spreads over")
    p.add_argument("--login-concurrency", type=int, default=50)
    p.add_argument("--idle-sessions", type=int, default=10000)
    p.add_argument("--idle-concurrency", type=int, default=50, help="how many sessions open at once")
    p.add_argument("--latency-sessions", type=int, default=1000)
    p.add_argument("--latency-concurrency", type=int, default=50)
    p.add_argument("--throughput-concurrency", type=int, default=4)
    p.add_argument("--fetch-size", type=int, default=30 * 1024 * 1024)
    p.add_argument("--smtp-concurrency", type=int, default=10)
    p.add_argument("--message-size", type=int, default=10 * 1024)
    p.add_argument("--https-concurrency", type=int, default=50)
    p.add_argument("--settle", type=float, default=2.0, help="seconds between READY and the memory reading")
    p.add_argument("--login-method", choices=["passthrough", "master"], default="passthrough",
                   help="how mailfront logs in to the backend")
    p.add_argument("--loadgen", help="the mailfront-bench binary (default: build target/release/mailfront-bench)")
    p.add_argument("--results-dir", help="default bench/results (--quick: the lab directory)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, no TLS; fail on any error")
    p.add_argument("--scale", action="store_true", help="idle sessions at --scale-levels instead of the scenarios")
    p.add_argument("--scale-levels", default="10000,50000,100000")
    p.add_argument("--scale-peers", default=",".join(SCALE_PEERS))
    p.add_argument("--sessions-per-loadgen", type=int, default=10000,
                   help="idle sessions per load generator process (each holds one descriptor per session)")
    p.add_argument("--memory-reserve-gib", type=float, default=4.0,
                   help="--scale stops before a level whose projected memory would leave less than this")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.duration, args.warmup, args.no_tls = 1, 1, 0, True
        args.users, args.login_concurrency, args.idle_sessions, args.idle_concurrency = 10, 10, 100, 20
        args.latency_sessions, args.latency_concurrency, args.throughput_concurrency = 20, 5, 2
        args.fetch_size, args.smtp_concurrency, args.https_concurrency, args.settle = 1024 * 1024, 2, 4, 0.3
    return args


def run_scenarios(ctx: Context, names: list[str], scenarios: list[str], report: dict) -> list[dict]:
    args = ctx.args
    runs = []
    ceiling = per_process_session_ceiling() - 100
    idle_sessions = args.idle_sessions
    single_process = [n for n in names if n in ("mailfront", "haproxy")]
    if "idle" in scenarios and idle_sessions > ceiling and single_process:
        report["notes"].append(
            f"idle sessions reduced from {idle_sessions:,} to {ceiling:,}: the hard RLIMIT_NOFILE here is "
            f"{fd_hard_limit():,} per process and cannot be raised without CAP_SYS_RESOURCE; "
            f"{', '.join(single_process)} hold two descriptors per proxied session in one process.")
        idle_sessions = ceiling
    report["settings"]["idle_sessions"] = idle_sessions
    for scenario in scenarios:
        variants = [False] if scenario in ("smtp", "https") or args.no_tls else [False, True]
        if scenario == "https":
            variants = [True]  # the HTTPS front door is TLS by definition
        for tls in variants:
            for repeat in range(args.repeat):
                for name in names:
                    peer = ctx.peers.peers[name]
                    if scenario == "smtp" and not peer.smtp:
                        continue
                    if scenario == "https" and not peer.https:
                        continue
                    what = f"{scenario}{' tls' if tls else ''} #{repeat + 1} {name}"
                    if scenario == "idle":
                        run = run_idle(ctx, peer, tls, repeat, idle_sessions)
                    else:
                        run = run_timed(ctx, peer, scenario, tls, repeat)
                    runs.append(run)
                    status = run.get("failure") or f"errors={run.get('errors')}"
                    log(f"{what}: {fmt(run.get('headline'), 1)} {HEADLINE[scenario][0]}, "
                        f"cpu/op {fmt(run.get('peer_cpu_per_op'), 1)}; {status[:300]}")
    return runs


def run_scale(ctx: Context, names: list[str], report: dict) -> list[dict]:
    """Idle sessions at each level for each peer, from several loopback source addresses, with a
    memory guard (the machine is shared: stop before the kernel's OOM killer would choose)."""
    args = ctx.args
    levels = [int(x) for x in args.scale_levels.split(",")]
    out = []
    per_session_kib: dict[str, float] = {}
    for level in levels:
        for name in names:
            peer = ctx.peers.peers[name]
            # Peer, backend and load generator memory per session, from the last level (or a guess).
            projected = level * per_session_kib.get(name, 150.0)
            available = mem_available_kib()
            if projected > available - args.memory_reserve_gib * 1024 * 1024:
                note = (f"skipped: projected {projected / 1024 / 1024:.1f} GiB for {level:,} sessions "
                        f"(from the last level) would leave less than {args.memory_reserve_gib} GiB of "
                        f"{available / 1024 / 1024:.1f} GiB available")
                out.append({"peer": name, "sessions": level, "note": note})
                log(f"scale {name} {level}: {note}")
                continue
            sources = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(math.ceil(level / args.sessions_per_loadgen))]
            mem_before = mem_available_kib()
            run = run_idle(ctx, peer, False, 0, level, sources)
            run["machine_mem_used_kib"] = mem_before - mem_available_kib()
            opened = run.get("opened") or 0
            if opened:
                # Everything this level took from the machine per session, for the next projection.
                per_session_kib[name] = max(20.0, 1.3 * (
                    (run.get("pss_after_kib", 0) - run.get("pss_before_kib", 0))
                    + (run.get("backend_pss_after_kib", 0) - run.get("backend_pss_before_kib", 0))
                    + run.get("tcp_mem_delta_kib", 0)) / opened + 30.0)
            if opened < level:
                run["note"] = limit_note(name, opened, level)
            out.append(run)
            log(f"scale {name} {level}: opened {opened:,}, errors {run.get('errors')}, "
                f"{fmt(run.get('kib_per_session'), 1)} KiB/session; {run.get('note') or run.get('failure') or ''}")
    return out


def limit_note(name: str, opened: int, level: int) -> str:
    ceiling = per_process_session_ceiling()
    if name in ("mailfront", "haproxy") and opened <= ceiling + 50:
        return (f"{opened:,} of {level:,}: one process, two descriptors per session, hard RLIMIT_NOFILE "
                f"{fd_hard_limit():,} (not raisable here)")
    if name == "nginx" and opened <= 2 * ceiling + 100:
        return (f"{opened:,} of {level:,}: two workers, two descriptors per session each, hard "
                f"RLIMIT_NOFILE {fd_hard_limit():,} per worker")
    return f"{opened:,} of {level:,}: see the failure and the peer's log"


def main(argv=None) -> int:
    args = parse_args(argv)
    names = (args.scale_peers if args.scale else args.peers).split(",")
    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r} (one of {', '.join(SCENARIOS)})")
    started = datetime.datetime.now()
    root = lab.reset_dir(lab.lab_root("bench-compare"))
    profile = os.environ.get("MAILFRONT_PROFILE", "release")
    binary = lab.build_mailfront(profile)
    loadgen = loadgen_binary(args)
    report = {"started": started.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "notes": [],
              "settings": {k: v for k, v in vars(args).items()}, "fairness": FAIRNESS,
              "mailfront_profile": profile, "loadgen": str(loadgen)}
    if profile != "release":
        report["notes"].append(f"mailfront is the {profile} build: numbers are not comparable")
    if "smtp" in scenarios and not args.scale:
        report["notes"].append(
            "smtp runs against mailfront alone: direct delivery is LMTP (another protocol), and nginx's "
            "SMTP proxy needs an SMTP server behind it (Dovecot offers LMTP and authenticated submission "
            "only), so it is not part of this comparison.")
    users = bench_users(args.users)
    all_ok = True
    with Peers(root, users, names, args.login_method, binary) as peers:
        report["peers"] = {n: {"version": p.version(), "description": p.description} for n, p in peers.peers.items()}
        report["backend"] = (f"{peers.backend.version()}, one instance (mbx1) on 127.0.0.1, tuned for load: "
                             "imap-login service_count = 0 / process_min_avail = 2; imap processes with "
                             f"client_limit = {peers.backend.imap_client_limit}, service_count = 0; "
                             "info_log_path = /dev/null; users in a {PLAIN} passwd-file.")
        peers.prime()
        if "throughput" in scenarios and not args.scale:
            peers.seed_fetch_message(args.fetch_size)
        report["tls"] = check_all(peers)
        report["endpoints"] = peers.endpoints()
        ctx = Context(args, peers, loadgen, root)
        if args.scale:
            report["scale"] = run_scale(ctx, names, report)
            runs = []
        else:
            runs = run_scenarios(ctx, names, scenarios, report)
        report["runs"] = runs
        report["summary"] = summarize(runs)
        for name in names:
            try:
                p = peers.peers[name]
                if getattr(p, "process", None) is not None or getattr(getattr(p, "server", None), "process", None) is not None:
                    os.kill(p.root_pid(), 0)
            except (OSError, AssertionError):
                report["notes"].append(f"{name} was not running at the end")
                all_ok = False
    report["machine"]["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    report["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    bad = [r for r in runs if r.get("failure") or r.get("errors")]
    bad += [r for r in report.get("scale", []) if r.get("failure") and not r.get("note")]
    text = markdown(report)
    results_dir = Path(args.results_dir) if args.results_dir else (root if args.quick else ROOT / "bench" / "results")
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%d-%H%M%S") + ("-scale" if args.scale else "-compare")
    (results_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (results_dir / f"{stem}.md").write_text(text)
    print(text)
    log(f"results: {results_dir / stem}.json and .md ({(datetime.datetime.now() - started).total_seconds():.0f} s)")
    if bad:
        log(f"{len(bad)} run(s) reported errors or failed")
    if args.quick and (bad or not all_ok):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bounded HTTP loads on loopback: wrk when installed, else a small Python load generator."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LUA = Path(__file__).with_name("events.lua")


@dataclass(frozen=True)
class Result:
    """One load's outcome, as wrk reports it."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def generator() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def run(url: str, events: Path, *, seconds: float, connections: int, threads: int = 2) -> Result:
    """POST the events in `events` (one per request, none twice) at `url` for `seconds`."""
    if generator() == "wrk":
        return _wrk(url, events, seconds=seconds, connections=connections, threads=threads)
    return _python(url, events, seconds=seconds, connections=connections)


def _wrk(url: str, events: Path, *, seconds: float, connections: int, threads: int) -> Result:
    done = subprocess.run(  # noqa: S603 - wrk with arguments built here
        [
            shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}",
            f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(LUA), url, "--", str(events), str(threads),
        ],
        capture_output=True, text=True, check=True, timeout=seconds + 120,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        non2xx=report["non2xx"],
        socket_errors=report["socket_errors"],
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
    )


def _python(url: str, events: Path, *, seconds: float, connections: int) -> Result:
    """Processes of threads, each on one keep-alive connection; slower than wrk, same meaning."""
    processes = max(1, min(multiprocessing.cpu_count(), connections))
    lines = events.read_text().splitlines()
    per = [lines[i::processes] for i in range(processes)]
    with multiprocessing.Pool(processes) as pool:
        parts = pool.starmap(
            _python_part, [(url, chunk, seconds, max(1, connections // processes)) for chunk in per]
        )
    latencies = sorted(ms for part in parts for ms in part[0])
    non2xx = sum(part[1] for part in parts)
    errors = sum(part[2] for part in parts)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    return Result(len(latencies), seconds, non2xx, errors, pct(0.50), pct(0.99))


def _python_part(
    url: str, lines: list[str], seconds: float, connections: int
) -> tuple[list[float], int, int]:
    target = urlsplit(url)
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    lock = threading.Lock()
    shares = [lines[i::connections] for i in range(connections)]

    def worker(share: list[str]) -> None:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        for line in share:
            if time.monotonic() >= deadline:
                break
            signature, body = line.split("\t", 1)
            started = time.monotonic()
            try:
                conn.request(
                    "POST", target.path, body=body,
                    headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                )  # fmt: skip
                response = conn.getresponse()
                response.read()
            except OSError:
                with lock:
                    counts["errors"] += 1
                conn.close()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                continue
            with lock:
                latencies.append((time.monotonic() - started) * 1000)
                counts["non2xx"] += not 200 <= response.status < 300
        conn.close()

    pool = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, counts["non2xx"], counts["errors"]

"""py-spy around a stretch of a benchmark: collapsed stacks and a short summary in the run folder."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.stack import BenchStack


@contextmanager
def profiled(stack: BenchStack, name: str, pid: int, *, on: bool) -> Iterator[None]:
    """Sample process `pid` while the block runs (when `on`); print where its time went."""
    if not on:
        yield
        return
    collapsed = stack.run_dir / f"profile-{name}.txt"
    spy = subprocess.Popen(  # noqa: S603 - py-spy with arguments built here
        [
            str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--format", "raw",
            "--rate", "250", "--output", str(collapsed), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        spy.wait(30)
    if collapsed.exists():
        summary = summarize(collapsed.read_text())
        (stack.run_dir / f"profile-{name}.summary.txt").write_text(summary)
        print(f"profile of {name}: {summary}", flush=True)


def summarize(collapsed: str, top: int = 60) -> str:
    """Share of samples each function is on the stack for (inclusive), from py-spy's raw output;
    the frames every sample shares (the server's or worker's own loop) are left out."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        for frame in set(stack.split(";")):
            inclusive[frame] += samples
    shown = [(frame, n) for frame, n in inclusive.most_common() if n < 0.9 * total][:top]
    lines = [f"{n / total:6.1%}  {frame}" for frame, n in shown]
    return f"{total} samples, share of time on the stack:\n" + "\n".join(lines)

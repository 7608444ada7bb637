"""Sampling profiles of the broker's workers under load, with py-spy (bench-only).

``bench.mint --profile DIR`` records each worker while the mint and introspection paths
are measured (``py-spy record --format raw``: folded stacks) and prints, per path, the
frames that hold the most samples by themselves (self) and with what they call
(inclusive), as shares of all samples. Sampling costs the workers a little CPU, so a
profiled run's requests/s reads a few per cent low.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def start(pids: list[int], seconds: float, out: Path, name: str) -> list[subprocess.Popen[bytes]]:
    """One ``py-spy record`` per worker, for ``seconds``; empty when py-spy is absent."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(  # noqa: S603
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out / f"{name}-{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.wait(60)


def summary(files: list[Path], top: int = 25) -> list[str]:
    """The frames with the most self and inclusive samples across ``files`` (folded stacks)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for file in files:
        if not file.exists():
            continue
        for line in file.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_short(f) for f in stack.split(";")]
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not total:
        return ["  (no samples: is py-spy installed, and may it attach to the workers?)"]
    lines = [f"  {total} samples; self:"]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: one row per function."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"

"""Where our programs spend their CPU during a load run, sampled by py-spy.

`Profiles` records every process of each program with `py-spy record` (100
samples a second, without pausing the process; idle threads are not sampled,
so a sample is a thread on the CPU or holding it) while the load runs, then
`heaviest` reads the raw stacks and gives each program's frames that were on
top of the stack most often: where its CPU goes, self time, not what a frame
called. Time in a C extension (libvips, the JSON and SQLite modules) counts
on the Python frame that called it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

SAMPLES_PER_S = 100
PY_SPY = Path(sys.executable).parent / "py-spy"


NATIVE = "(a thread with no Python frame: libvips' own worker threads)"


@dataclasses.dataclass(frozen=True)
class Frame:
    name: str  # function (file:line), as py-spy names it
    share: float  # of the program's samples, 0..1
    samples: int


@dataclasses.dataclass(frozen=True)
class Profile:
    busy_threads: float  # samples per sampling tick: threads active (py-spy judges), on average
    heaviest: list[Frame]


class Profiles:
    def __init__(
        self, programs: dict[str, Callable[[], list[int]]], seconds: int, work: Path
    ) -> None:
        self._programs = programs
        self._seconds = seconds
        self._dir = work / "profiles"
        self._recorders: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Profiles:
        self._dir.mkdir(parents=True, exist_ok=True)
        for program, pids in self._programs.items():
            for pid in pids():
                output = self._dir / f"{program}-{pid}.txt"
                output.unlink(missing_ok=True)
                command = [
                    str(PY_SPY), "record", "--pid", str(pid), "--format", "raw",
                    "--output", str(output), "--duration", str(self._seconds),
                    "--rate", str(SAMPLES_PER_S), "--nonblocking",
                ]  # fmt: skip
                recorder = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                self._recorders.append((program, output, recorder))
        return self

    def __exit__(self, *exc: object) -> None:
        for _, _, recorder in self._recorders:
            _, errors = recorder.communicate(timeout=self._seconds + 60)
            if recorder.returncode != 0:
                raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')}")

    def heaviest(self, limit: int = 10) -> dict[str, Profile]:
        """Each program's `limit` frames most often on top of a sampled stack."""
        on_top: dict[str, Counter[str]] = {}
        for program, output, _ in self._recorders:
            counts = on_top.setdefault(program, Counter())
            for line in output.read_text().splitlines() if output.exists() else []:
                stack, _, count = line.rpartition(" ")
                counts[stack.rsplit(";", 1)[-1].strip() or NATIVE] += int(count)
        found = {}
        for program, counts in on_top.items():
            total = sum(counts.values())
            frames = [
                Frame(name, samples / max(total, 1), samples)
                for name, samples in counts.most_common(limit)
            ]
            found[program] = Profile(total / (SAMPLES_PER_S * self._seconds), frames)
        return found

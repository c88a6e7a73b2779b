"""What a task used, for `vcnode history`: its CPU time and its peak memory.

A container's figures are in its cgroup, which Docker removes the moment it exits, so they
are read while it runs (`CgroupMeter`). Both cgroup layouts are looked in: v2 (one
hierarchy, `cpu.stat` and `memory.peak`) and v1 (`cpuacct.usage`, `memory.max_usage_in_bytes`),
each under the path either Docker cgroup driver gives a container (cgroupfs: `docker/<id>`;
systemd: `system.slice/docker-<id>.scope`). A hybrid host (v1 controllers and an empty v2
hierarchy beside them) has its CPU time in both and its memory in v1 only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
MOUNTINFO = Path("/proc/self/mountinfo")
# Files read per figure, best first; the CPU files are told apart by name (`cpu_seconds`).
CPU_FILES_V2 = ("cpu.stat",)
CPU_FILES_V1 = ("cpuacct.usage",)
PEAK_FILES_V2 = ("memory.peak",)
PEAK_FILES_V1 = ("memory.max_usage_in_bytes",)
CURRENT_FILES_V2 = ("memory.current",)
CURRENT_FILES_V1 = ("memory.usage_in_bytes",)
# A cgroup file holds a number or a few lines; anything longer is not what we look for.
READ_BYTES = 4096


@dataclass(frozen=True)
class CgroupMount:
    path: Path
    version: int  # 1 or 2
    # A v1 hierarchy's controllers ("cpuacct", "memory", ...); empty for v2.
    controllers: frozenset[str] = frozenset()


def _unescape(field: str) -> str:
    """A mountinfo path field: space, tab, newline and backslash come as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, plain)
    return field


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup hierarchies mounted, from /proc/self/mountinfo's text."""
    mounts = []
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, fs_fields = before.split(), after.split()
        if not separator or len(fields) < 5 or not fs_fields:
            continue
        mount_point = Path(_unescape(fields[4]))
        if fs_fields[0] == "cgroup2":
            mounts.append(CgroupMount(mount_point, 2))
        elif fs_fields[0] == "cgroup":
            options = fs_fields[2] if len(fs_fields) > 2 else ""
            mounts.append(CgroupMount(mount_point, 1, frozenset(options.split(","))))
    return mounts


def container_cgroup_dirs(container_id: str) -> tuple[str, ...]:
    """Where a container's cgroup is, relative to a hierarchy's root: cgroupfs driver first,
    then systemd's."""
    return (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")


@dataclass(frozen=True)
class UsageFiles:
    """The files a container's figures are read from, each a candidate list best first
    (what `candidate_files` gives) or the one that exists (what `find_usage_files` gives)."""

    cpu: tuple[Path, ...] = ()
    memory_peak: tuple[Path, ...] = ()
    memory_current: tuple[Path, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.cpu or self.memory_peak or self.memory_current)


def candidate_files(container_id: str, mounts: Iterable[CgroupMount]) -> UsageFiles:
    """Every file a container's figures may be in, v2 before v1 (pure)."""
    cpu: list[Path] = []
    peak: list[Path] = []
    current: list[Path] = []
    ordered = sorted(mounts, key=lambda mount: -mount.version)
    for relative in container_cgroup_dirs(container_id):
        for mount in ordered:
            directory = mount.path / relative
            if mount.version == 2:
                cpu += [directory / name for name in CPU_FILES_V2]
                peak += [directory / name for name in PEAK_FILES_V2]
                current += [directory / name for name in CURRENT_FILES_V2]
            else:
                if "cpuacct" in mount.controllers:
                    cpu += [directory / name for name in CPU_FILES_V1]
                if "memory" in mount.controllers:
                    peak += [directory / name for name in PEAK_FILES_V1]
                    current += [directory / name for name in CURRENT_FILES_V1]
    return UsageFiles(tuple(cpu), tuple(peak), tuple(current))


def cpu_stat_seconds(text: str) -> float | None:
    """CPU seconds from a v2 `cpu.stat` (its `usage_usec` line); None without one."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            try:
                return int(value.strip()) / 1e6
            except ValueError:
                return None
    return None


def cpuacct_seconds(text: str) -> float | None:
    """CPU seconds from a v1 `cpuacct.usage` (nanoseconds)."""
    count = byte_count(text)
    return None if count is None else count / 1e9


def byte_count(text: str) -> int | None:
    """The one number a file like `memory.peak` holds ("max" or garbage: None)."""
    try:
        return int(text.strip())
    except ValueError:
        return None


def cpu_seconds(path: Path, text: str) -> float | None:
    return cpu_stat_seconds(text) if path.name in CPU_FILES_V2 else cpuacct_seconds(text)


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            return file.read(READ_BYTES).decode("ascii", "replace")
    except OSError:
        return None


def find_usage_files(container_id: str, mountinfo: Path = MOUNTINFO) -> UsageFiles:
    """The files of a running container's cgroup that exist and say something, the first of
    each kind (blocking: call in a thread); empty when none is found."""
    text = _read(mountinfo)
    if text is None:
        return UsageFiles()
    candidates = candidate_files(container_id, cgroup_mounts(text))
    cpu = next(
        (
            path
            for path in candidates.cpu
            if (content := _read(path)) is not None and cpu_seconds(path, content) is not None
        ),
        None,
    )
    peak = next((path for path in candidates.memory_peak if path.is_file()), None)
    current = next((path for path in candidates.memory_current if path.is_file()), None)
    return UsageFiles(
        cpu=(cpu,) if cpu else (),
        memory_peak=(peak,) if peak else (),
        memory_current=(current,) if current else (),
    )


@dataclass(frozen=True)
class UsageReading:
    cpu_seconds: float | None
    memory_bytes: int | None  # the peak where the kernel keeps one, else the current use


def read_usage(files: UsageFiles) -> UsageReading | None:
    """One look at a container's figures (blocking, a few tiny reads: call in a thread);
    None once its cgroup is gone."""
    cpu = memory = None
    read_any = False
    for path in files.cpu:
        if (text := _read(path)) is not None:
            read_any = True
            cpu = cpu_seconds(path, text)
    for path in (*files.memory_peak, *files.memory_current):
        if (text := _read(path)) is not None:
            read_any = True
            memory = byte_count(text)
            break
    return UsageReading(cpu, memory) if read_any else None


class UsageMeter:
    """A run's figures so far: the last CPU time read and the most memory seen."""

    def __init__(self) -> None:
        self.cpu_seconds: float | None = None
        self._memory_bytes: int | None = None
        # Where they are read from, once found.
        self.files = UsageFiles()

    def add(self, reading: UsageReading) -> None:
        if reading.cpu_seconds is not None:
            self.cpu_seconds = max(self.cpu_seconds or 0.0, reading.cpu_seconds)
        if reading.memory_bytes is not None:
            self._memory_bytes = max(self._memory_bytes or 0, reading.memory_bytes)

    @property
    def peak_memory_mb(self) -> float | None:
        return None if self._memory_bytes is None else self._memory_bytes / MIB

"""Reading what a task used: cgroup mounts and files and their figures,
and the process tree a freeze stops."""

from __future__ import annotations

from pathlib import Path

from daemon.runtime.process import process_tree
from daemon.runtime.usage import (
    CgroupMount,
    UsageFiles,
    UsageMeter,
    UsageReading,
    byte_count,
    candidate_files,
    cgroup_mounts,
    cpu_seconds,
    cpu_stat_seconds,
    cpuacct_seconds,
    find_usage_files,
    read_usage,
)

ID = "8dc2da03c0fba7139f526d9e118ce755355968695ac54a6a41f622288653d410"

# A hybrid host (v1 controllers and an empty v2 hierarchy), as Debian's Docker 20.10 runs on.
HYBRID = """\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A v2-only host with systemd (most current distributions).
UNIFIED = """\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_cgroup_mounts_are_read_from_mountinfo_with_their_version_and_controllers() -> None:
    mounts = cgroup_mounts(HYBRID)
    assert [(str(mount.path), mount.version) for mount in mounts] == [
        ("/sys/fs/cgroup/cpu", 1),
        ("/sys/fs/cgroup/cpuacct", 1),
        ("/sys/fs/cgroup/memory", 1),
        ("/sys/fs/cgroup/systemd", 1),
        ("/sys/fs/cgroup/unified", 2),
    ]
    assert "cpuacct" in mounts[1].controllers
    assert "memory" in mounts[2].controllers
    # Optional fields ("shared:4") before the separator are no mount point.
    assert cgroup_mounts(UNIFIED) == [CgroupMount(Path("/sys/fs/cgroup"), 2)]


def test_a_mount_point_with_a_space_is_unescaped() -> None:
    line = "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    assert cgroup_mounts(line) == [CgroupMount(Path("/mnt/my cgroups"), 2)]


def test_garbled_mountinfo_lines_are_skipped() -> None:
    assert cgroup_mounts("nonsense\n\n1 2 3 - cgroup2\n") == []


def test_v2_files_are_looked_for_first_under_either_drivers_path() -> None:
    files = candidate_files(ID, cgroup_mounts(UNIFIED))
    assert files.cpu == (
        Path(f"/sys/fs/cgroup/docker/{ID}/cpu.stat"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{ID}.scope/cpu.stat"),
    )
    assert files.memory_peak[0] == Path(f"/sys/fs/cgroup/docker/{ID}/memory.peak")
    assert files.memory_current[1] == Path(
        f"/sys/fs/cgroup/system.slice/docker-{ID}.scope/memory.current"
    )


def test_a_hybrid_host_looks_in_v2_then_in_the_v1_controllers_that_have_each_figure() -> None:
    files = candidate_files(ID, cgroup_mounts(HYBRID))
    assert files.cpu[:2] == (
        Path(f"/sys/fs/cgroup/unified/docker/{ID}/cpu.stat"),
        Path(f"/sys/fs/cgroup/cpuacct/docker/{ID}/cpuacct.usage"),
    )
    assert Path(f"/sys/fs/cgroup/memory/docker/{ID}/memory.max_usage_in_bytes") in (
        files.memory_peak
    )
    assert all("/cpu/" not in str(path) for path in files.cpu), "the v1 cpu controller has no usage"
    assert all("systemd" not in str(path) for path in (*files.cpu, *files.memory_peak))


def test_cpu_seconds_from_cpu_stat_and_cpuacct_usage() -> None:
    stat = "usage_usec 1169817\nuser_usec 264430\nsystem_usec 905386\nnice_usec 0\n"
    assert cpu_stat_seconds(stat) == 1.169817
    assert cpu_stat_seconds("nr_periods 0\nnr_throttled 0\n") is None  # v1 cpu's cpu.stat
    assert cpu_stat_seconds("usage_usec many\n") is None
    assert cpuacct_seconds("1169817783\n") == 1.169817783
    assert cpu_seconds(Path("x/cpu.stat"), stat) == 1.169817
    assert cpu_seconds(Path("x/cpuacct.usage"), "2000000000\n") == 2.0


def test_byte_counts_are_one_number_or_none() -> None:
    assert byte_count("108503040\n") == 108503040
    assert byte_count("max\n") is None
    assert byte_count("") is None


def test_the_meter_keeps_the_last_cpu_time_and_the_most_memory_seen() -> None:
    meter = UsageMeter()
    assert (meter.cpu_seconds, meter.peak_memory_mb) == (None, None)
    meter.add(UsageReading(cpu_seconds=0.5, memory_bytes=100 * 1024 * 1024))
    meter.add(UsageReading(cpu_seconds=1.5, memory_bytes=20 * 1024 * 1024))
    meter.add(UsageReading(cpu_seconds=None, memory_bytes=None))
    assert meter.cpu_seconds == 1.5
    assert meter.peak_memory_mb == 100.0


def test_files_are_found_and_read_where_they_are_and_none_when_they_are_gone(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cgroup" / "docker" / ID
    directory.mkdir(parents=True)
    (directory / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 1\n")
    (directory / "memory.current").write_text(str(64 * 1024 * 1024))
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 24 0:26 / {tmp_path / 'cgroup'} rw - cgroup2 cgroup2 rw\n")

    files = find_usage_files(ID, mountinfo)
    # No memory.peak (a kernel before 5.19): the current use stands in, sampled.
    assert files == UsageFiles(
        cpu=(directory / "cpu.stat",), memory_current=(directory / "memory.current",)
    )
    assert read_usage(files) == UsageReading(cpu_seconds=2.5, memory_bytes=64 * 1024 * 1024)

    (directory / "memory.peak").write_text(str(80 * 1024 * 1024))
    files = find_usage_files(ID, mountinfo)
    assert read_usage(files) == UsageReading(cpu_seconds=2.5, memory_bytes=80 * 1024 * 1024)

    for path in directory.iterdir():
        path.unlink()
    assert read_usage(files) is None, "the container's cgroup is gone once it exits"
    assert not find_usage_files("another", mountinfo).found
    assert not find_usage_files(ID, tmp_path / "no-mountinfo").found


def test_a_process_tree_lists_parents_before_children_and_nothing_outside() -> None:
    table = {
        10: (1, "S"),  # the root
        11: (10, "S"),
        12: (11, "R"),
        13: (10, "S"),
        14: (12, "R"),
        20: (1, "R"),  # the owner's, beside it
        21: (20, "R"),
    }
    tree = process_tree(10, table)
    assert sorted(tree) == [10, 11, 12, 13, 14]
    assert tree[0] == 10
    assert tree.index(11) < tree.index(12) < tree.index(14)
    assert process_tree(99, table) == [99]

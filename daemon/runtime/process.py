"""Tasks as processes in a bubblewrap sandbox, for volunteers without Docker whose owner
opted in (`--allow-process-runtime`).

The sandbox shows a task what a container would: the host's /usr read-only (so its
programs run), /input read-only, /output writable, a private /tmp, its own /proc and /dev,
and nothing else of the host: no /etc, no home, no data dir. It has its own network (none
unless the task asks and the owner allows), pid, ipc and uts namespaces. bwrap sets this up
as root, then `setpriv` makes the task an unprivileged user of its own (a uid from
TASK_UIDS that no other running task has, and no account on the host) with no
capabilities and no way to gain any before it runs; so the volunteer must run as root, and
refuses this runtime otherwise (`unavailable`). Limits come from `prlimit` (util-linux)
rather than a preexec hook: no Python may run between fork and exec in a process that holds
gRPC threads. Memory is an address-space cap, CPU time the timeout: rlimits, not the cgroups
Docker gives, which is why volunteers still show this runtime apart.

Its results carry no CPU time or peak memory (None): the sandbox's processes are reaped
inside it, so our child's rusage does not hold them, and a reaper process of our own in
between cost every task ~17 ms to start and ~9.5 MB while it ran, on the owner's machine.

Freezing a task stops every process of its tree (SIGSTOP, found through /proc by parent):
the sandbox's processes are in a session of their own (`--new-session`), out of reach of
the process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from daemon.capacity import MAX_SLOTS
from daemon.runtime.spec import (
    LiveRun,
    LiveRuns,
    LogBuffer,
    OutputCallback,
    OutputWatch,
    ProgressCallback,
    RunResult,
    RunSpec,
    StartedCallback,
    failure_for_exit,
    tail,
)

MIB = 1024 * 1024
# Memory limits an address space, which is larger than what a process touches.
ADDRESS_SPACE_HEADROOM_MB = 256
# One uid per running task: the process limit (RLIMIT_NPROC) counts per uid, so tasks
# sharing one would share one limit, and one task's fork bomb would starve the rest.
TASK_UIDS = range(2_147_000_000, 2_147_000_000 + 2 * MAX_SLOTS)  # far from login and subuid ranges
TOOLS = ("bwrap", "setpriv", "prlimit")
# A merged-/usr host has these as links into /usr; another has them as directories.
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What a task with network needs to find and trust hosts.
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")

# A process in uninterruptible sleep stops once it leaves it: freeze waits that long for
# every process of a task to show stopped, then leaves the SIGSTOPs sent to do their work.
FREEZE_SETTLE_SECONDS = 2.0
FREEZE_PASS_PAUSE_SECONDS = 0.002
STOPPED_STATES = frozenset("TtZX")  # stopped, traced, or past running at all


def unavailable() -> str | None:
    """Why this host cannot run sandboxed tasks, in words its owner can act on; None if it
    can."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"the process runtime runs tasks in a sandbox and needs {', '.join(missing)} "
            "(Debian: apt install bubblewrap util-linux)"
        )
    if os.geteuid() != 0:
        return (
            "the process runtime runs each task as the user nobody, which takes root: run the "
            "volunteer as root (e.g. as a system service), or give it a Docker engine"
        )
    return None


def scratch_dir(spec: RunSpec) -> Path:
    """The task's /tmp: on disk beside its /output and counted with it against its cap (a
    tmpfs would take the host's memory, which no cgroup limits here)."""
    return spec.output_dir.with_name(spec.output_dir.name + ".tmp")


def sandbox_command(spec: RunSpec, uid: int) -> list[str]:
    """The command that runs `spec` in its sandbox, limits included (pure, so the lockdown
    itself is testable)."""
    address_space = (spec.memory_mb + ADDRESS_SPACE_HEADROOM_MB) * MIB
    command = [
        "prlimit",
        f"--as={address_space}",
        f"--nproc={spec.pids_limit}",
        f"--cpu={int(spec.timeout_seconds) + 1}",
        "--",
        "bwrap",
        "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
        *([] if spec.network else ["--unshare-net"]),
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the daemon's terminal
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    if spec.network:
        for path in NETWORK_FILES:
            command += ["--ro-bind-try", path, path]
    command += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--bind", str(scratch_dir(spec)), "/tmp",
        "--ro-bind", str(spec.input_dir), "/input",
        "--bind", str(spec.output_dir), "/output",
        "--chdir", "/tmp",
        "--",
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
        "--",
        *spec.command,
    ]  # fmt: skip
    return command


def sandbox_env(spec: RunSpec) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "VCNODE_INPUT": "/input",
        "VCNODE_OUTPUT": "/output",
        **spec.env,
    }


def _fresh_dir(path: Path, uid: int) -> None:
    shutil.rmtree(path, ignore_errors=True)  # a crashed run's
    path.mkdir(mode=0o700)
    os.chown(path, uid, uid)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, from /proc/<pid>/stat; None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    # Its name (field 2) is in parentheses and may hold anything, ")" and spaces included.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), fields[0]
    except (IndexError, ValueError):
        return None


def _process_table() -> dict[int, tuple[int, str]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = found
    return table


def process_tree(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    """`root` and every process under it in `table` ({pid: (parent pid, state)}), each
    parent before its children (pure)."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for pid, (parent, _) in table.items():
        children[parent].append(pid)
    tree = [root]
    for pid in tree:  # grows as it goes: breadth first
        tree.extend(children.get(pid, ()))
    return tree


def _signal(pid: int, parent: int, signal_number: signal.Signals) -> None:
    """Sends a signal to `pid` if it is still the child of `parent`: a process that ended
    can have its pid taken by one of the owner's, which must never be stopped. Through a
    pidfd, so the process checked is the one signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError as error:
        if error.errno != errno.ENOSYS:
            return
        # A kernel before 5.3: checked, then signalled by pid (a window of microseconds).
        if (found := _stat(pid)) is not None and found[0] == parent:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)
        return
    try:
        if (found := _stat(pid)) is not None and found[0] == parent:
            signal.pidfd_send_signal(pidfd, signal_number)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def freeze_tree(root: int) -> bool:
    """SIGSTOPs `root` (a child of ours) and every process under it, passes over /proc
    until none runs on (one forked, or another of the task's woke a stopped one, between
    two looks); False when `root` has ended. Blocking: call it in a thread."""
    settle_by = time.monotonic() + FREEZE_SETTLE_SECONDS
    while True:
        table = _process_table()
        if root not in table or table[root][1] in "ZX" or table[root][0] != os.getpid():
            return False
        running = [pid for pid in process_tree(root, table) if table[pid][1] not in STOPPED_STATES]
        if not running or time.monotonic() > settle_by:
            return True
        for pid in running:
            _signal(pid, table[pid][0], signal.SIGSTOP)
        time.sleep(FREEZE_PASS_PAUSE_SECONDS)  # in a thread: lets the stops land


def thaw_tree(root: int) -> bool:
    """SIGCONTs `root` and every process under it; False when `root` has ended."""
    table = _process_table()
    if root not in table or table[root][1] in "ZX" or table[root][0] != os.getpid():
        return False
    for pid in process_tree(root, table):
        _signal(pid, table[pid][0], signal.SIGCONT)
    return True


class ProcessRuntime:
    name = "process"
    isolated = False  # rlimits, not cgroups; and inputs are copies, never the cache's files

    def __init__(self) -> None:
        self._free_uids = list(reversed(TASK_UIDS))
        # Runs in progress whose process is up, by run id.
        self._live: LiveRuns[asyncio.subprocess.Process] = LiveRuns()

    async def run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        on_output: OutputCallback | None = None,
        *,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        problem = unavailable()
        if problem is not None:
            raise RuntimeError(problem)
        uid = self._free_uids.pop()  # a volunteer runs at most MAX_SLOTS (+1 fetched)
        try:
            return await self._run(spec, on_progress, uid, on_output, on_started)
        finally:
            self._free_uids.append(uid)

    async def freeze(self, run_id: str) -> bool:
        """SIGSTOP to every process of the run; its timeout stands still meanwhile."""
        return await self._live.freeze(run_id, lambda p: asyncio.to_thread(freeze_tree, p.pid))

    async def thaw(self, run_id: str) -> bool:
        """SIGCONT to every process of the run; its timeout runs on, moved by the time it
        was frozen."""
        return await self._live.thaw(run_id, lambda p: asyncio.to_thread(thaw_tree, p.pid))

    async def _run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        uid: int,
        on_output: OutputCallback | None,
        on_started: StartedCallback | None,
    ) -> RunResult:
        # The task writes its outputs as its uid; the volunteer, as root, reads them.
        await asyncio.to_thread(os.chown, spec.output_dir, uid, uid)
        scratch = scratch_dir(spec)
        await asyncio.to_thread(_fresh_dir, scratch, uid)
        try:
            return await self._run_in(spec, on_progress, uid, scratch, on_output, on_started)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def _run_in(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        uid: int,
        scratch: Path,
        on_output: OutputCallback | None,
        on_started: StartedCallback | None,
    ) -> RunResult:
        started_at = time.time()
        process = await asyncio.create_subprocess_exec(
            *sandbox_command(spec, uid),
            env=sandbox_env(spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills the tree
        )
        live = self._live.add(spec.run_id, process)
        try:
            result = await self._wait(spec, on_progress, scratch, on_output, on_started, live)
        finally:
            self._live.remove(spec.run_id, live)
        return replace(result, started_at=started_at)

    async def _wait(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        scratch: Path,
        on_output: OutputCallback | None,
        on_started: StartedCallback | None,
        live: LiveRun[asyncio.subprocess.Process],
    ) -> RunResult:
        process = live.handle

        async def stop() -> None:
            self._kill_group(process)

        watch = OutputWatch(spec, on_progress, stop, also=(scratch,))
        progress = asyncio.get_running_loop().create_task(watch.run())
        failure = ""
        stdout, stderr = LogBuffer(), LogBuffer()
        # Read as it comes and kept to its end: a task writing without end holds no more
        # than twice LOG_BYTES of the volunteer's memory.
        assert process.stdout is not None
        assert process.stderr is not None
        reading = asyncio.gather(
            _drain(process.stdout, stdout, "stdout", on_output),
            _drain(process.stderr, stderr, "stderr", on_output),
        )
        try:
            try:
                if on_started is not None:
                    on_started()
                async with asyncio.timeout(spec.timeout_seconds) as timeout:
                    with live.deadline.governing(timeout):
                        await process.wait()
                        await reading
            except TimeoutError:
                self._kill_group(process)
                await process.wait()
                await reading
                failure = f"timed out after {spec.timeout_seconds:g} s (killed)"
        except BaseException:
            # Cancelled (frozen or not: SIGKILL ends stopped processes too), or the caller's
            # callback failed: the task must not outlive its run.
            self._kill_group(process)
            await asyncio.shield(process.wait())
            reading.cancel()
            raise
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        exit_code = process.returncode
        await watch.check_after_exit()
        failure = watch.overflow or failure
        if not failure and exit_code is not None and exit_code < 0:
            failure = f"killed by signal {signal.Signals(-exit_code).name}"
        if not failure and b"MemoryError" in stderr.content:
            failure = f"out of memory: needed more than its {spec.memory_mb} MiB limit"
        return RunResult(
            exit_code=exit_code,
            failure=failure or failure_for_exit(exit_code, stderr.content),
            stdout_tail=tail(stdout.content),
            stderr_tail=tail(stderr.content),
            started_at=0.0,  # `_run_in` knows
            finished_at=time.time(),
            stdout=stdout.content,
            stderr=stderr.content,
            stdout_cut=stdout.cut,
            stderr_cut=stderr.cut,
        )

    @staticmethod
    def _kill_group(process: asyncio.subprocess.Process) -> None:
        # bwrap dies, and --die-with-parent takes the sandbox's processes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


async def _drain(
    stream: asyncio.StreamReader,
    buffer: LogBuffer,
    name: str,
    on_output: OutputCallback | None,
) -> None:
    while chunk := await stream.read(1 << 16):
        buffer.append(chunk)
        if on_output is not None:
            on_output(name, chunk)

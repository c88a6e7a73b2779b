"""The owner's control socket: a gRPC server on a Unix socket in the node's data dir.

Only the user running the daemon (and root) can open it: the data dir is 0700 and the
socket 0600, so reaching it proves the caller is the machine's owner, as Docker's socket
does. Its calls still pass the edge (daemon/transport/edge.py) under a policy whose one
kind of caller is that owner.

A Unix socket's path must fit in 107 bytes; a data dir deep enough to exceed that keeps a
symlink named `control.sock` to a socket in a private directory under the system's
temporary dir, and clients dial where the link points.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from daemon.transport.access import AccessPolicy
from daemon.transport.channels import create_server

SOCKET_NAME = "control.sock"
# sun_path holds 108 bytes with its terminating NUL.
_MAX_SOCKET_PATH = 107


class ControlSocketError(Exception):
    """The control socket cannot be served or reached; the message says what to do."""

    def __init__(self, message: str, *, not_the_owner: bool = False) -> None:
        super().__init__(message)
        self.not_the_owner = not_the_owner


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def _short_enough(path: Path) -> bool:
    return len(os.fsencode(path)) <= _MAX_SOCKET_PATH


class ControlServer:
    """Serves the services `register` adds on the data dir's control socket."""

    def __init__(
        self, data_dir: Path, node_id: str, register: Callable[[grpc.aio.Server], None]
    ) -> None:
        self._link = socket_path(data_dir)
        self._private_dir: Path | None = None
        self._server = create_server(AccessPolicy(node_id, local_socket=True))
        register(self._server)

    async def start(self) -> None:
        # A socket left by a daemon that was killed: ours now (the data dir's lock is held).
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()
        target = self._link
        if not _short_enough(target):
            self._private_dir = Path(tempfile.mkdtemp(prefix="vcnode-control-"))
            target = self._private_dir / SOCKET_NAME
        bound = self._server.add_secure_port(
            f"unix:{target}", grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
        )
        if not bound:
            raise ControlSocketError(f"could not serve the owner's control socket at {target}")
        # Its directory (the data dir, or the private one) is 0700 already: nobody else
        # could reach it between its making and this.
        target.chmod(0o600)
        if target != self._link:
            self._link.symlink_to(target)
        await self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()
        if self._private_dir is not None:
            with contextlib.suppress(OSError):
                (self._private_dir / SOCKET_NAME).unlink(missing_ok=True)
                self._private_dir.rmdir()


def open_control_channel(data_dir: Path) -> grpc.aio.Channel:
    """A channel to the daemon whose data dir is `data_dir`. Raises ControlSocketError when
    no daemon serves one there, or this user may not open it."""
    link = socket_path(data_dir)
    try:
        target = Path(os.path.realpath(link)) if link.is_symlink() else link
        if os.stat(target).st_uid != os.stat(data_dir).st_uid:
            # A link left by a crash into the temporary dir, where anyone may make a socket
            # of that name: only one of the data dir's owner is the volunteer's.
            raise ControlSocketError(
                f"{target} is not the volunteer's control socket (another user owns it): "
                "restart the volunteer to make a new one"
            )
    except FileNotFoundError:
        raise ControlSocketError(
            f"no volunteer is running with data dir {data_dir} (no {SOCKET_NAME} there): "
            "start it (`node daemon --role volunteer`, or `vcnode service install`), or "
            "name its data dir with --data-dir"
        ) from None
    except PermissionError:
        raise ControlSocketError(_not_the_owner(data_dir), not_the_owner=True) from None
    if not os.access(target, os.R_OK | os.W_OK):
        raise ControlSocketError(_not_the_owner(data_dir), not_the_owner=True)
    if not _short_enough(target):
        raise ControlSocketError(f"the control socket's path is too long to dial: {target}")
    return grpc.aio.secure_channel(
        f"unix:{target}", grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    )


def _not_the_owner(data_dir: Path) -> str:
    try:
        owner = data_dir.stat().st_uid
        who = f"uid {owner}"
        with contextlib.suppress(KeyError, ImportError):
            import pwd

            who = pwd.getpwuid(owner).pw_name
    except OSError:
        who = "the user who runs it"
    return (
        f"only the user who runs this volunteer ({who}) or root may control it: run the "
        f"command as {who} (e.g. `sudo -u {who} vcnode ...`)"
    )

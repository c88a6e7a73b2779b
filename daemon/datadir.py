"""The node's data dir: an exclusive lock, the persistent node id and the address file."""

from __future__ import annotations

import errno
import fcntl
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import DataDirError

LOCK_FILE = "lock"
NODE_ID_FILE = "node_id"
ADDRESS_FILE = "address"
# The roles served at that address, so a client looking for one role passes the others by.
ROLES_FILE = "roles"


def write_atomically(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Readers see the old content or the new one, never half of it; a file of mode 0o600
    (a key) is never readable by others, even for an instant."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    os.replace(temporary, path)


def read_address(data_dir: Path) -> str | None:
    try:
        text = (data_dir / ADDRESS_FILE).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return text or None


def read_roles(data_dir: Path) -> tuple[str, ...] | None:
    """The roles of the daemon serving from `data_dir`, None when it does not say."""
    try:
        text = (data_dir / ROLES_FILE).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return tuple(role for role in text.split(",") if role)


@dataclass
class DataDir:
    path: Path
    node_id: str
    _lock_fd: int

    @classmethod
    def open(cls, path: Path) -> DataDir:
        """Creates the dir if needed, takes its lock and loads (or creates) the node id."""
        path = path.expanduser().resolve()
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Owner-only: it holds keys, the membership's token digests, every user's blobs.
            path.chmod(0o700)
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise DataDirError(
                f"data dir {path} is not usable ({error.strerror}); "
                "pass --data-dir with a directory you can write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(
                    f"another node daemon (pid {holder}) is using data dir {path}; "
                    "stop it first or pass a different --data-dir"
                ) from None
            raise DataDirError(f"cannot lock data dir {path}: {error.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        # Holding the lock proves whoever wrote an address file is gone (e.g. killed):
        # remove it so no client dials a dead address until we serve again.
        (path / ADDRESS_FILE).unlink(missing_ok=True)
        try:
            node_id = cls._load_node_id(path)
        except OSError as error:
            os.close(fd)
            raise DataDirError(
                f"data dir {path} is not writable ({error.strerror}); "
                "pass --data-dir with a directory you can write"
            ) from None
        return cls(path=path, node_id=node_id, _lock_fd=fd)

    @staticmethod
    def _load_node_id(path: Path) -> str:
        id_file = path / NODE_ID_FILE
        try:
            existing = id_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            existing = ""
        if existing:
            return existing
        node_id = uuid.uuid4().hex
        write_atomically(id_file, node_id + "\n")
        return node_id

    def write_address(self, address: str, roles: tuple[str, ...]) -> None:
        # Roles first: whoever reads the address finds them already there.
        write_atomically(self.path / ROLES_FILE, ",".join(roles) + "\n")
        write_atomically(self.path / ADDRESS_FILE, address + "\n")

    def close(self) -> None:
        """Removes the address file (nobody serves there any more) and releases the lock."""
        (self.path / ADDRESS_FILE).unlink(missing_ok=True)
        os.close(self._lock_fd)

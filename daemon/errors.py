"""Errors a person can act on. The CLI prints their message and exits with their code."""


class NodeError(Exception):
    """A failure with a message that says what went wrong and what to do about it."""

    exit_code = 1


class ConfigError(NodeError):
    """Bad flags, environment or config file: nothing was started."""

    exit_code = 2


class DataDirError(NodeError):
    """The data dir cannot be used (unwritable, or locked by another daemon)."""

    exit_code = 2


class InvalidInputError(NodeError):
    """A request that cannot be right as given (a workflow file, a parameter); the message
    names what to change. Nothing was done."""

    exit_code = 2


class NotFoundError(NodeError):
    """A named thing (workflow, task, blob) does not exist."""


class UnreachableError(NodeError):
    """No daemon answered where we looked."""

    exit_code = 3


class RejectedError(NodeError):
    """A peer refused us for a reason retrying will not fix (cluster, protocol version)."""

    exit_code = 2


class AccessDeniedError(NodeError):
    """A peer would not let us in: no certificate of its cluster, or not one for this."""

    exit_code = 4

"""Who may see and act on a workflow: its owner, an admin, or this node's own owner. The
gRPC servicer and the web dashboard both ask here, so the rule exists once."""

from __future__ import annotations

from daemon.errors import AccessDeniedError, NotFoundError
from daemon.transport.access import Caller
from manager_node.store import ManagerStore


def may_see(owner: str, caller: Caller) -> bool:
    return owner == caller.owner or caller.sees_everything


async def check_may_see(store: ManagerStore, workflow_id: str, caller: Caller) -> str:
    """The workflow's owner; raises unless `caller` may see it."""
    owner = await store.workflow_owner(workflow_id)
    if owner is None:
        raise NotFoundError(f"no workflow {workflow_id!r} on this manager")
    if not may_see(owner, caller):
        raise AccessDeniedError(
            f"workflow {workflow_id} is not yours ({caller.describe()}): users see and "
            "act on their own workflows only"
        )
    return owner

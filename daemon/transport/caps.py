"""Caps on what a peer may send, checked at the edge before any servicer sees a request:
every string, bytes field, list and map of every request message, a few fields allowed more
(or less) than the rest. A request over a cap is refused with INVALID_ARGUMENT and a short
message naming the field, so nothing behind the edge has to fear a 9 MiB host name or a
million-entry list: the registry, the stores and every listing stay the size honest peers
make them. The caps sit far above what an honest peer sends.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

DEFAULT_TEXT = 64 * 1024  # characters of a string, bytes of a bytes field
DEFAULT_ITEMS = 10_000  # entries of a list or a map
# What a client sends inside a submission instead of uploading it.
INLINE_FILE_BYTES = 256 * 1024
INPUT_FILES = 100_000  # a folder of inputs
IMAGES = 1_000  # image tags a volunteer reports (it reports at most these)
# Entries of an owner's allow-list (daemon/config.py takes at most 256).
ALLOW_ENTRIES = 256
# What a volunteer pushes of a running task's stream at once (`vcnode logs -f`); it keeps
# the newest bytes when more came, and says how many it skipped.
LOG_PUSH_BYTES = 64 * 1024
# By field name as the .proto files spell it.
TEXT: dict[str, int] = {
    # Who a volunteer says it is: shown in every listing of the pool.
    "vcnode.v1.Register.volunteer_id": 128,
    "vcnode.v1.Register.hostname": 255,
    "vcnode.v1.Register.cluster": 64,
    "vcnode.v1.Register.version": 64,
    "vcnode.v1.Resources.images": 512,
    "vcnode.v1.OwnerLimits.allow_managers": 128,
    "vcnode.v1.OwnerLimits.allow_images": 512,
    "vcnode.v1.OwnerLimits.allow_users": 64,
    "vcnode.v1.TaskSpec.user": 64,
    # Why a volunteer takes no task now: shown in every listing of the pool.
    "vcnode.v1.Load.unavailable": 256,
    # A workflow file may be as large as a message may be.
    "vcnode.v1.SubmitWorkflowRequest.workflow_toml": 16 * 1024 * 1024,
    "vcnode.v1.InlineFile.content": INLINE_FILE_BYTES,
    "vcnode.v1.LogChunk.data": LOG_PUSH_BYTES,
    "vcnode.v1.LogChunk.stream": 16,
    "vcnode.v1.PushTaskLogRequest.task_id": 1024,
}
ITEMS: dict[str, int] = {
    "vcnode.v1.Resources.images": IMAGES,
    "vcnode.v1.OwnerLimits.allow_managers": ALLOW_ENTRIES,
    "vcnode.v1.OwnerLimits.allow_images": ALLOW_ENTRIES,
    "vcnode.v1.OwnerLimits.allow_users": ALLOW_ENTRIES,
    "vcnode.v1.SubmitTasksRequest.tasks": 1_000,  # a manager sends 500 at a time
    "vcnode.v1.ReportVerdictsRequest.verdicts": 1_000,  # and verdicts 500 at a time
    "vcnode.v1.TaskSpec.avoid_volunteers": 64,  # copies of one task: a handful
    "vcnode.v1.TaskResult.logs": 2,  # stdout and stderr
    "vcnode.v1.PushTaskLogRequest.chunks": 2,  # and what each wrote since the last push
    "vcnode.v1.SubmitWorkflowRequest.files": INPUT_FILES,
    "vcnode.v1.SubmitWorkflowRequest.inline_files": INPUT_FILES,
    "vcnode.v1.SubmitWorkflowRequest.overrides": 1_000,
}


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and bool(entry.GetOptions().map_entry)


def _over(name: str, count: int, what: str, cap: int) -> str:
    return f"{name.removeprefix('vcnode.v1.')} holds {count:,} {what}; at most {cap:,}"


def excess(message: Message) -> str | None:
    """What in `message` goes over its cap, in a short sentence; None if nothing does."""
    for field, value in message.ListFields():
        name = field.full_name
        if field.is_repeated:
            cap = ITEMS.get(name, DEFAULT_ITEMS)
            if len(value) > cap:
                return _over(name, len(value), "entries", cap)
            items = list(value.values()) + list(value) if _is_map(field) else list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Message):
                found = excess(item)
                if found:
                    return found
            elif isinstance(item, str | bytes):
                cap = TEXT.get(name, DEFAULT_TEXT)
                if len(item) > cap:
                    what = "characters" if isinstance(item, str) else "bytes"
                    return _over(name, len(item), what, cap)
    return None

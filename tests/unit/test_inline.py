"""Small files inline in offers and results: which travel, and what a receiver accepts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from daemon import inline
from daemon.inline import MAX_FILE_BYTES, MAX_TASK_BYTES, InlineBlobError
from daemon.models import FileRef, InlineBlob, ResourceRequest, TaskResult, TaskSpec
from daemon.store import codecs
from daemon.transport import convert


def ref_of(name: str, content: bytes) -> FileRef:
    return FileRef(name, hashlib.sha256(content).hexdigest(), len(content))


def test_pick_takes_small_files_in_order_while_the_budget_lasts() -> None:
    sizes = [10, MAX_FILE_BYTES + 1, MAX_FILE_BYTES, MAX_FILE_BYTES, 5]
    # 10 + 4096 fits; the next 4096 would pass the 8192 budget; 5 still fits after it.
    assert inline.pick(sizes) == [True, False, True, False, True]
    assert sum(s for s, small in zip(sizes, inline.pick(sizes), strict=True) if small) <= (
        MAX_TASK_BYTES
    )


def test_verified_returns_the_bytes_of_the_named_files() -> None:
    a, b = b"alpha\n", b"beta\n"
    refs = [ref_of("a.txt", a), ref_of("b.txt", b)]
    found = inline.verified(refs, [inline.blob_of(a), inline.blob_of(b"not named")])
    assert found == {refs[0].sha256: a}


def test_verified_refuses_bytes_that_do_not_match_their_ref() -> None:
    ref = ref_of("a.txt", b"alpha\n")
    with pytest.raises(InlineBlobError, match=r"inline bytes of a\.txt .* do not match"):
        inline.verified([ref], [InlineBlob(ref.sha256, b"forged\n")])


def test_verified_refuses_more_than_a_task_may_carry() -> None:
    blobs = [inline.blob_of(bytes([i]) * MAX_FILE_BYTES) for i in range(3)]
    refs = [ref_of(f"{i}", blob.content) for i, blob in enumerate(blobs)]
    with pytest.raises(InlineBlobError, match=f"more than the {MAX_TASK_BYTES} bytes"):
        inline.verified(refs, blobs)


def spec_with_inline() -> TaskSpec:
    content = b"\x00\xffbinary"
    return TaskSpec(
        task_id="w.t",
        workflow_id="w",
        image="img",
        command=("cat",),
        resources=ResourceRequest(cpus=1.0, memory_mb=64),
        timeout_seconds=60,
        inputs=(ref_of("in", content),),
        inline_inputs=(inline.blob_of(content),),
    )


def result_with_inline() -> TaskResult:
    content = b"out\n"
    return TaskResult(
        task_id="w.t",
        attempt=1,
        exit_code=0,
        error="",
        outputs=(ref_of("out", content),),
        inline_outputs=(inline.blob_of(content),),
    )


def test_inline_bytes_survive_the_stores_json() -> None:
    spec, result = spec_with_inline(), result_with_inline()
    assert codecs.task_spec_from_json(codecs.dump(spec)) == spec
    assert codecs.task_result_from_json(codecs.dump(result)) == result


def test_records_from_before_inline_blobs_still_load() -> None:
    spec = json.loads(codecs.dump(spec_with_inline()))
    result = json.loads(codecs.dump(result_with_inline()))
    del spec["inline_inputs"], result["inline_outputs"]
    assert codecs.task_spec_from_json(json.dumps(spec)).inline_inputs == ()
    loaded = codecs.task_result_from_json(json.dumps(result))
    assert loaded is not None
    assert loaded.inline_outputs == ()
    assert loaded.outputs == result_with_inline().outputs


def test_inline_bytes_survive_the_wire() -> None:
    spec, result = spec_with_inline(), result_with_inline()
    assert convert.task_spec_from_proto(convert.task_spec_to_proto(spec)) == spec
    assert convert.task_result_from_proto(convert.task_result_to_proto(result)) == result


def test_a_result_keeps_only_the_inline_outputs_it_names() -> None:
    result = result_with_inline()
    padded = replace(result, inline_outputs=(*result.inline_outputs, inline.blob_of(b"x")))
    assert inline.with_checked_outputs(padded) == result


def test_a_result_with_forged_inline_outputs_becomes_a_failure() -> None:
    result = result_with_inline()
    forged = replace(result, inline_outputs=(InlineBlob(result.outputs[0].sha256, b"forged"),))
    checked = inline.with_checked_outputs(forged)
    assert not checked.succeeded
    assert "unusable inline outputs" in checked.error
    assert checked.outputs == ()
    assert checked.inline_outputs == ()

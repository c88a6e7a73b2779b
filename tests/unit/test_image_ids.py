"""Image IDs are asked of Docker once per few seconds, and again after a load."""

from __future__ import annotations

from volunteer_node.image_ids import ImageIds


async def test_an_answer_is_kept_for_its_ttl_then_asked_again() -> None:
    asked: list[str] = []
    answers = {"img": "sha256:1"}
    now = [0.0]

    async def lookup(image: str) -> str | None:
        asked.append(image)
        return answers.get(image)

    ids = ImageIds(lookup, ttl=10, clock=lambda: now[0])
    assert await ids.get("img") == "sha256:1"
    assert await ids.get("missing") is None
    now[0] = 9.9
    assert await ids.get("img") == "sha256:1"
    assert await ids.get("missing") is None
    assert asked == ["img", "missing"]
    answers["missing"] = "sha256:2"
    ids.forget()
    assert await ids.get("missing") == "sha256:2", "after a load, Docker is asked again"
    now[0] = 20
    answers["img"] = "sha256:3"
    assert await ids.get("img") == "sha256:3"

"""A peer's image archive is loaded only as the one image the task pins, with its tags out."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from daemon.runtime.image_archive import ImageArchiveError, untagged_copy

CONFIG = b'{"architecture": "amd64", "config": {}}'
IMAGE_ID = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def archive(path: Path, manifest: object, files: dict[str, bytes] | None = None) -> Path:
    """A `docker save`-shaped tar with `manifest` as its manifest.json."""
    members = {
        "manifest.json": json.dumps(manifest).encode(),
        f"{IMAGE_ID[7:]}.json": CONFIG,
        "layer/layer.tar": b"layer bytes",
        "repositories": b'{"python": {"3": "x"}}',
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": b'{"manifests": [{"annotations": '
        b'{"io.containerd.image.name": "docker.io/library/python:3"}}]}',
        "other/layer.tar": b"another image's layer",
        **(files or {}),
    }
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            header = tarfile.TarInfo(name)
            header.size = len(data)
            tar.addfile(header, io.BytesIO(data))
    return path


def entry(**overrides: object) -> dict[str, object]:
    return {
        "Config": f"{IMAGE_ID[7:]}.json",
        "RepoTags": ["python:3", "vcnode/worker:1"],
        "Layers": ["layer/layer.tar"],
        **overrides,
    }


def test_the_copy_holds_the_image_and_names_no_tag(tmp_path: Path) -> None:
    target = tmp_path / "copy.tar"
    untagged_copy(archive(tmp_path / "a.tar", [entry()]), IMAGE_ID, target)
    with tarfile.open(target) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layer = tar.extractfile("layer/layer.tar").read()  # type: ignore[union-attr]
    assert manifest == [{**entry(), "RepoTags": None}]
    # Only the image: the legacy tag file, an OCI index naming images, others' layers, out.
    assert names == {"manifest.json", f"{IMAGE_ID[7:]}.json", "layer/layer.tar"}
    assert layer == b"layer bytes"


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ([entry(), entry()], "holds 2 images, not one"),
        ([], "holds 0 images, not one"),
        ({"Config": "x"}, "holds no list of images"),
        ([entry(Config=None)], "names no image config"),
        ([entry(Config="missing.json")], "lacks its config missing.json"),
        ([entry(Layers=["nowhere.tar"])], "lacks its layer nowhere.tar"),
        ([entry(Layers=None)], "lists no layers"),
    ],
)
def test_an_archive_that_is_not_one_image_is_refused(
    tmp_path: Path, manifest: object, problem: str
) -> None:
    target = tmp_path / "copy.tar"
    with pytest.raises(ImageArchiveError, match=problem):
        untagged_copy(archive(tmp_path / "a.tar", manifest), IMAGE_ID, target)
    assert not target.exists()


def test_an_archive_of_another_image_is_refused(tmp_path: Path) -> None:
    other = "sha256:" + "0" * 64
    target = tmp_path / "copy.tar"
    with pytest.raises(ImageArchiveError, match=f"holds image {IMAGE_ID}, not {other}"):
        untagged_copy(archive(tmp_path / "a.tar", [entry()]), other, target)
    assert not target.exists()


def test_what_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "a.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageArchiveError, match="not a tar file"):
        untagged_copy(garbage, IMAGE_ID, tmp_path / "copy.tar")

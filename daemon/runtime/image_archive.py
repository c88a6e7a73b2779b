"""What a `docker save` archive from another node may do to this one's images: add exactly the
image a task pins, and nothing else.

`docker load` applies every tag the archive names, so an archive from a peer could point the
owner's `python:3` (or any tag) at an image of the peer's choosing. A volunteer therefore
loads an archive rebuilt from the pinned image's config and layers alone, with a manifest
that names no tag (an OCI index would name images: it is never copied), after checking that
the archive holds one image whose ID (the sha256 of its config) is the one the task pins;
it runs pinned tasks by that ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024


class ImageArchiveError(ValueError):
    """An archive that is not the image it should be; the message says how."""


def _read(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    member = tar.getmember(name)
    if not member.isfile() or member.size > limit:
        raise ImageArchiveError(f"{name} in the archive is not a file of at most {limit} bytes")
    extracted = tar.extractfile(member)
    assert extracted is not None
    return extracted.read()


def _single_image(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        manifest = json.loads(_read(tar, MANIFEST, MAX_MANIFEST_BYTES))
    except KeyError:
        raise ImageArchiveError("the archive has no manifest.json") from None
    except ValueError as error:
        raise ImageArchiveError(f"the archive's manifest.json is not JSON ({error})") from None
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        count = len(manifest) if isinstance(manifest, list) else "no list of"
        raise ImageArchiveError(f"the archive holds {count} images, not one")
    entry: dict[str, Any] = manifest[0]
    return entry


def untagged_copy(archive: Path, image_id: str, target: Path) -> None:
    """Writes to `target` an archive rebuilt from `archive` with nothing but the image
    `image_id`: its config, the layers its manifest lists, and a manifest naming no tag.
    Whatever else the archive holds (an OCI index with image names, other images, the
    legacy tag file) is left out. Raises ImageArchiveError (nothing written) unless the
    archive holds exactly that one image."""
    try:
        with tarfile.open(archive) as source:
            entry = _single_image(source)
            config_name = entry.get("Config")
            layers = entry.get("Layers")
            if not isinstance(config_name, str):
                raise ImageArchiveError("the archive's manifest names no image config")
            if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
                raise ImageArchiveError("the archive's manifest lists no layers")
            try:
                config = _read(source, config_name, MAX_CONFIG_BYTES)
            except KeyError:
                raise ImageArchiveError(f"the archive lacks its config {config_name}") from None
            found = "sha256:" + hashlib.sha256(config).hexdigest()
            if found != image_id:
                raise ImageArchiveError(f"the archive holds image {found}, not {image_id}")
            manifest = {"Config": config_name, "RepoTags": None, "Layers": layers}
            with tarfile.open(target, "w") as copy:
                _add(copy, config_name, config)
                for name in dict.fromkeys(layers):
                    _copy_file(source, copy, name)
                _add(copy, MANIFEST, json.dumps([manifest]).encode())
    except tarfile.TarError as error:
        target.unlink(missing_ok=True)
        raise ImageArchiveError(f"the archive is not a tar file ({error})") from None
    except ImageArchiveError:
        target.unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    header = tarfile.TarInfo(name)
    header.size = len(data)
    tar.addfile(header, io.BytesIO(data))


def _copy_file(source: tarfile.TarFile, target: tarfile.TarFile, name: str) -> None:
    try:
        member = source.getmember(name)
    except KeyError:
        raise ImageArchiveError(f"the archive lacks its layer {name}") from None
    if not member.isfile():
        raise ImageArchiveError(f"layer {name} in the archive is not a plain file")
    header = tarfile.TarInfo(name)
    header.size = member.size
    target.addfile(header, source.extractfile(member))

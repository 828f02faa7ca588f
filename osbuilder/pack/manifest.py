"""manifest.json: what `build` wrote, with sizes, digests, the config and the init mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from typing import Any

from osbuilder import __version__
from osbuilder.foundation.fsutil import sha256_file
from osbuilder.pack.artifact import Artifact
from osbuilder.rootfs.summary import Summary

MANIFEST_NAME = "manifest.json"


MANIFEST_VERSION = 1  # schemas/manifest.v1.schema.json


def write_manifest(path: Path, config: dict[str, Any], summary: Summary, artifacts: Sequence[Artifact],
                   epoch: int, sidecars: Sequence[tuple[Path, str]] = (), relative_to: Path | None = None) -> None:
    """manifest.json; `sidecars` are (file, kind) written beside the artifacts. Files are
    named relative to `relative_to` (the output directory), or by their names."""

    def name(p: Path) -> str:
        return str(p.relative_to(relative_to)) if relative_to is not None else p.name

    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "osbuilder_version": __version__,
        "distro": summary.distro,
        "release": summary.release,
        "architecture": summary.architecture,
        "init_mode": summary.init_mode,
        "cgroup_driver": summary.cgroup_driver,
        "agent": {"sha256": summary.agent_sha256, "version": summary.agent_version, "probe": summary.probe},
        "source_date_epoch": epoch,
        "config": config,
        "sources": [source.as_json() for source in summary.sources],
        "packages": [{"name": p.name, "version": p.version, "architecture": p.architecture,
                      **({"files_removed": True} if p.files_removed else {})} for p in summary.installed],
        **({"slim": summary.slim.as_json()} if summary.slim is not None else {}),
        "artifacts": [{**artifact.manifest_entry(), "file": name(artifact.path)} for artifact in artifacts],
        "payloads": [p.as_json() for p in summary.payloads],
        "sidecars": [{"file": name(p), "kind": kind, "sha256": sha256_file(p)} for p, kind in sidecars],
    }
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")

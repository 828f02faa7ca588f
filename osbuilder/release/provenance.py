"""--provenance: an in-toto Statement (v1) whose predicate is SLSA Provenance v1, beside the
manifest. Its subjects are the artifacts with their sha256; its resolved dependencies are the
recipe, the package lock, the agent and every payload, by digest; its external parameters
are the command line and the build's settings; the builder is osbuilder at its version.

No time and no host name goes in: the same build gives the same statement, so its digest
(printed, and in --json) is what a signer signs, with whatever signing the pipeline uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from osbuilder import __version__
from osbuilder.foundation.fsutil import sha256_file
from osbuilder.foundation.settings import setting
from osbuilder.pack.artifact import Artifact
from osbuilder.rootfs.summary import Summary

PROVENANCE_NAME = "provenance.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:osbuilder:build:v1"  # what externalParameters mean: `osbuilder build`'s settings
BUILDER_ID = "urn:osbuilder:builder"


@dataclass(frozen=True)
class ProvenanceOptions:
    provenance: bool = setting(False, help=f"write {PROVENANCE_NAME} beside the manifest: an in-toto statement "
                               "with an SLSA v1 provenance predicate over the artifacts (its sha256 is printed, "
                               "to sign)", boolean=True)


@dataclass(frozen=True)
class ProvenanceInput:
    artifacts: Sequence[Artifact]  # at their final names, relative to the output directory
    directory: Path  # where the artifacts are now
    summary: Summary
    settings: dict[str, Any]  # the build's settings, as the manifest records them
    command: Sequence[str]
    recipe: Path
    lock: Path | None
    agent_name: str | None
    shipped: Sequence[Path] = ()  # what ships beside the artifacts (the release tarballs): subjects too


def _descriptor(name: str, sha256: str, uri: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "digest": {"sha256": sha256}}
    if uri:
        found["uri"] = uri
    return found


def statement(given: ProvenanceInput) -> dict[str, Any]:
    summary = given.summary
    dependencies = [_descriptor(f"recipe:{given.recipe.name}", sha256_file(given.recipe))]
    if given.lock is not None:
        dependencies.append(_descriptor(f"lock:{given.lock.name}", sha256_file(given.lock)))
    if summary.agent_sha256:
        dependencies.append(_descriptor(f"agent:{given.agent_name or 'kata-agent'}", summary.agent_sha256))
    dependencies += [_descriptor(f"payload:{p.name}:{p.source}", p.sha256) for p in summary.payloads]
    if summary.trust is not None:  # a CA the user added is an input as much as a payload
        dependencies += [_descriptor(f"ca:{ca.source}", ca.sha256) for ca in summary.trust.user_cas]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [_descriptor(str(a.path.relative_to(given.directory)), a.sha256) for a in given.artifacts]
        + [_descriptor(str(path.relative_to(given.directory)), sha256_file(path)) for path in given.shipped],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"command": list(given.command), "settings": given.settings},
                "internalParameters": {"distro": summary.distro, "release": summary.release,
                                       "architecture": summary.architecture, "init_mode": summary.init_mode,
                                       "source_date_epoch": summary.creation_epoch},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {"builder": {"id": BUILDER_ID, "version": {"osbuilder": __version__}}},
        },
    }


def write_provenance(path: Path, given: ProvenanceInput) -> str:
    """The statement written to `path` (canonical JSON: sorted keys); returns its sha256."""
    data = (json.dumps(statement(given), indent=2, sort_keys=True) + "\n").encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()

"""Findings: what inspect verifies and check compares, each with a severity, a stable code,
an explanation and a fix. Codes never change meaning; scripts may match on them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error", "warning" or "info"
    code: str
    message: str
    fix: str
    subject: str = ""  # the artifact or hypervisor section it is about
    # The settings it rests on, each {"source": where it is set, "value": what it says}.
    sources: tuple[dict[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = [dict(source) for source in self.sources]
        return data

    def line(self) -> str:
        where = f" [{self.subject}]" if self.subject else ""
        return f"{self.severity}: {self.code}{where}: {self.message}; fix: {self.fix}"


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def at_or_above(findings: list[Finding], threshold: str) -> list[Finding]:
    """The findings a gate of `threshold` (a severity) fails on: that severity and worse."""
    rank = SEVERITIES.index(threshold)
    return [f for f in findings if SEVERITIES.index(f.severity) <= rank]

"""Findings: what inspect verifies and check compares, each with a severity, a stable code,
an explanation and a fix. Codes never change meaning; scripts may match on them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error", "warning" or "info"
    code: str
    message: str
    fix: str
    subject: str = ""  # the artifact or hypervisor section it is about

    def as_json(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        where = f" [{self.subject}]" if self.subject else ""
        return f"{self.severity}: {self.code}{where}: {self.message}; fix: {self.fix}"


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)

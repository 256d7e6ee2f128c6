"""The one shape of a diagnosis, shared by the doctor, the controller and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """What went wrong (`message`), where (`layer`), and what to change (`fix`)."""

    severity: str
    code: str
    layer: str | None
    message: str
    fix: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `data` (numbers behind the finding) only when present."""
        d = asdict(self)
        if not d["data"]:
            d.pop("data")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["severity"], d["code"], d.get("layer"), d["message"], d["fix"], d.get("data") or {})

    def __str__(self) -> str:
        where = f" [{self.layer}]" if self.layer else ""
        return f"{self.severity.upper()} {self.code}{where}: {self.message}\n    fix: {self.fix}"


def has_errors(findings: list[Finding]) -> bool:
    """True when any finding would stop a run (severity error)."""
    return any(f.severity == "error" for f in findings)

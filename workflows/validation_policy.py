"""How a workflow wants its results checked: `validation` and its knobs, in `[workflow]` and
per `[[tasks]]` entry (manager_node/validation.py runs it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from splitters.api import SplitterError


class Mode(StrEnum):
    NONE = "none"
    QUORUM = "quorum"
    ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class ValidationPolicy:
    mode: Mode = Mode.ADAPTIVE
    # Copies started at once under `quorum`.
    replicas: int = 2
    # Copies that must agree for a result to stand.
    quorum: int = 2
    # Copies of one task at most, failed and disagreeing ones included.
    max_copies: int = 4
    # Agreements in a row after which one copy of a volunteer's stands alone (adaptive).
    trust_threshold: int = 10
    # The share of a trusted volunteer's results checked by a second copy all the same.
    spot_check_rate: float = 0.05

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for each value that cannot work."""
        found = []
        if self.mode is not Mode.NONE and not 2 <= self.quorum <= 16:
            found.append(("quorum", "must be between 2 and 16 (copies that must agree)"))
        if not self.quorum <= self.replicas <= 16:
            found.append(("replicas", f"must be between quorum ({self.quorum}) and 16"))
        if not max(self.replicas, self.quorum) <= self.max_copies <= 32:
            found.append(("max_copies", f"must be between replicas ({self.replicas}) and 32"))
        if not 0 <= self.trust_threshold <= 1_000_000:
            found.append(("trust_threshold", "must be between 0 and 1000000"))
        if not 0.0 <= self.spot_check_rate <= 1.0:
            found.append(("spot_check_rate", "must be between 0 and 1"))
        return found


NO_VALIDATION = ValidationPolicy(mode=Mode.NONE)

# The keys of `[workflow]` and of a `[[tasks]]` entry that set a policy.
POLICY_KEYS = frozenset(
    {"validation", "replicas", "quorum", "max_copies", "trust_threshold", "spot_check_rate"}
)


def parse_policy(
    table: Mapping[str, Any], where: str, base: ValidationPolicy = ValidationPolicy()
) -> ValidationPolicy:
    """The policy `table` sets over `base`; SplitterError naming every bad key under `where`
    (e.g. "workflow" or "tasks[2]")."""
    errors: list[SplitterError] = []
    changes: dict[str, Any] = {}
    if "validation" in table:
        value = table["validation"]
        choices = [mode.value for mode in Mode]
        if value in choices:
            changes["mode"] = Mode(value)
        else:
            errors.append(
                SplitterError(
                    f"{where}.validation",
                    f"must be one of {', '.join(choices)} (how results are checked: "
                    "none trusts each, quorum runs copies until enough agree, adaptive "
                    "copies only what untrusted volunteers return)",
                )
            )
    types = {field.name: field.type for field in fields(ValidationPolicy)}
    for key in sorted((POLICY_KEYS - {"validation"}) & set(table)):
        value = table[key]
        wanted = float if types[key] in (float, "float") else int
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(SplitterError(f"{where}.{key}", f"must be a number, got {value!r}"))
        elif wanted is int and not isinstance(value, int):
            errors.append(SplitterError(f"{where}.{key}", f"must be a whole number, got {value}"))
        else:
            changes[key] = wanted(value)
    policy = replace(base, **changes)
    errors += [SplitterError(f"{where}.{key}", message) for key, message in policy.problems()]
    if errors:
        raise SplitterError.combine(errors)
    return policy

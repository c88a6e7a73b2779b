"""The one line format every benchmark prints."""

from __future__ import annotations

import operator
from dataclasses import dataclass

_OPS = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    op: str
    limit: float

    @property
    def passed(self) -> bool:
        return bool(_OPS[self.op](self.value, self.limit))

    def line(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"bench {self.name} {self.value:.3g} {self.unit} "
            f"target {self.op} {self.limit:g} {verdict}"
        )

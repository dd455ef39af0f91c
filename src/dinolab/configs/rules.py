"""What a config value may be: `Range` (the numbers a key accepts) and `ConfigError` (the one-line
error naming the key and the fix). Light, and below the methods: a method's config section
declares its own ranges (methods/registry.py: `ConfigSection`)."""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and what is allowed."""


@dataclass(frozen=True)
class Range:
    """The numbers a key accepts: bounds (None: unbounded) that are closed unless marked open,
    and a note on what special values mean. A null value is the type's business (OmegaConf
    refuses None for keys that are not Optional)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            text = f"more than {self.low:g}" if self.low_open else f"{self.low:g} or more"
        else:
            assert self.high is not None
            text = f"less than {self.high:g}" if self.high_open else f"{self.high:g} or less"
        return text + (f" ({self.note})" if self.note else "")


POSITIVE = Range(0, low_open=True)
COUNT = Range(1)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1, note="a probability")
SHARE_OF_RUN = Range(0, 1, note="a share of the run; null = use the epoch count")
TEMPERATURE = Range(0, low_open=True, note="a softmax temperature; 0 divides by zero")

"""Parameters a report type declares, checked when the report is asked for.

Each parameter turns what a client sent (JSON) into a Python value, or
raises ParamError with a sentence a person can act on. The request stores
`to_json(clean(raw))`; the worker cleans that stored JSON again, so there is
one validation path and a retry replays exactly what was asked. Relative
values ("the last 7 days") are resolved at request time: a retry the next
day reports the same days.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.utils import timezone

from jobs.exceptions import BadInput


class ParamError(ValueError):
    """One parameter is wrong; the message says how."""


class InvalidParams(BadInput):
    """A report request is wrong. `errors` maps a field ("type", "format",
    "params.period", ...) to its message; the API answers 400 with them."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


class Param:
    """Base class: `required`, a `default` used when the key is absent, and
    `help` shown in the API's catalogue and the admin."""

    kind = "value"

    def __init__(self, *, required: bool = False, default: Any = None, help: str = ""):
        self.required = required
        self.default = default
        self.help = help

    def clean(self, raw: Any) -> Any:
        """The Python value, or ParamError."""
        raise NotImplementedError

    def to_json(self, value: Any) -> Any:
        return value

    def describe(self) -> dict:
        return {"kind": self.kind, "required": self.required, "default": self.default, "help": self.help}


@dataclass(frozen=True)
class Period:
    """Whole days, `first` to `last` inclusive, in the project's time zone;
    `start` and `end` are the instants that bound them (end excluded), ready
    for `created_at__gte=start, created_at__lt=end`."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.first, time.min))

    @property
    def end(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.last + timedelta(days=1), time.min))

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first} to {self.last}"


class DateRange(Param):
    """{"from": "2026-11-01", "to": "2026-11-30"} (inclusive; "today" and
    "yesterday" are accepted as dates), or {"last_days": 7}: the 7 days
    ending today. At most `max_days` long."""

    kind = "date_range"

    def __init__(self, *, max_days: int = 366, default_last_days: int | None = 7, **options):
        default = {"last_days": default_last_days} if default_last_days else None
        super().__init__(default=default, **options)
        self.max_days = max_days

    def clean(self, raw: Any) -> Period:
        today = timezone.localdate()
        if not isinstance(raw, dict):
            raise ParamError('expected {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"} or {"last_days": N}')
        if set(raw) == {"last_days"}:
            days = raw["last_days"]
            if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= self.max_days:
                raise ParamError(f"last_days must be a whole number from 1 to {self.max_days}")
            return Period(first=today - timedelta(days=days - 1), last=today)
        if set(raw) != {"from", "to"}:
            raise ParamError(
                f'expected the keys "from" and "to", or "last_days"; got {", ".join(sorted(raw)) or "none"}'
            )
        first, last = self._date(raw["from"], "from", today), self._date(raw["to"], "to", today)
        if first > last:
            raise ParamError(f"from {first} is after to {last}")
        if (last - first).days + 1 > self.max_days:
            raise ParamError(f"{(last - first).days + 1} days is longer than the {self.max_days} days allowed")
        return Period(first=first, last=last)

    @staticmethod
    def _date(raw: Any, key: str, today: date) -> date:
        if raw == "today":
            return today
        if raw == "yesterday":
            return today - timedelta(days=1)
        try:
            return date.fromisoformat(raw)
        except (TypeError, ValueError):
            raise ParamError(f"{key} must be a date like 2026-11-30, today or yesterday; got {raw!r}") from None

    def to_json(self, value: Period) -> dict:
        return {"from": value.first.isoformat(), "to": value.last.isoformat()}

    def describe(self) -> dict:
        return {**super().describe(), "max_days": self.max_days}


class Choice(Param):
    """One of `choices`, or with many=True a list of them (duplicates dropped)."""

    kind = "choice"

    def __init__(self, choices: Sequence[str], *, many: bool = False, **options):
        super().__init__(**options)
        self.choices = list(choices)
        self.many = many

    def clean(self, raw: Any) -> str | list[str]:
        if self.many and not isinstance(raw, list):
            raise ParamError(f"expected a list of: {', '.join(self.choices)}")
        values = raw if self.many else [raw]
        unknown = [value for value in values if value not in self.choices]
        if unknown:
            raise ParamError(f"unknown value {unknown[0]!r}; one of: {', '.join(self.choices)}")
        return list(dict.fromkeys(values)) if self.many else values[0]

    def describe(self) -> dict:
        return {**super().describe(), "choices": self.choices, "many": self.many}


class Text(Param):
    kind = "text"

    def __init__(self, *, max_length: int = 200, **options):
        super().__init__(**options)
        self.max_length = max_length

    def clean(self, raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise ParamError("expected a non-empty string")
        if len(raw) > self.max_length:
            raise ParamError(f"at most {self.max_length} characters")
        return raw.strip()


class Integer(Param):
    kind = "integer"

    def __init__(self, *, min_value: int | None = None, max_value: int | None = None, **options):
        super().__init__(**options)
        self.min_value, self.max_value = min_value, max_value

    def clean(self, raw: Any) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ParamError(f"expected a whole number; got {raw!r}")
        if self.min_value is not None and raw < self.min_value:
            raise ParamError(f"at least {self.min_value}")
        if self.max_value is not None and raw > self.max_value:
            raise ParamError(f"at most {self.max_value}")
        return raw


def clean_params(declared: dict[str, Param], raw: Any) -> dict[str, Any]:
    """Every declared parameter cleaned (defaults filled in, absent optional
    ones left out); InvalidParams naming each bad or unknown key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidParams({"params": "expected an object of parameters"})
    errors: dict[str, str] = {}
    for key in raw:
        if key not in declared:
            known = ", ".join(declared) or "none"
            errors[f"params.{key}"] = f"unknown parameter; this report takes: {known}"
    cleaned: dict[str, Any] = {}
    for name, param in declared.items():
        value = raw.get(name, param.default)
        if value is None:
            if param.required:
                errors[f"params.{name}"] = "this parameter is required"
            continue
        try:
            cleaned[name] = param.clean(value)
        except ParamError as exc:
            errors[f"params.{name}"] = str(exc)
    if errors:
        raise InvalidParams(errors)
    return cleaned

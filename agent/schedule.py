"""Business hours for scheduled sync: "07:30-18:00" on "mon-fri"."""

from __future__ import annotations

from datetime import datetime, time

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def parse_hours(spec: str) -> tuple[time, time]:
    start_s, _, end_s = spec.replace(" ", "").partition("-")
    start = _time(start_s)
    end = time(23, 59, 59, 999999) if end_s == "24:00" else _time(end_s)
    if end <= start:
        raise ValueError("end before start")
    return start, end


def _time(s: str) -> time:
    h, _, m = s.partition(":")
    return time(int(h), int(m or 0))


def parse_days(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-")
            i, j = DAYS.index(a), DAYS.index(b)
            out |= set(range(i, j + 1)) if i <= j else set(range(i, 7)) | set(range(j + 1))
        else:
            out.add(DAYS.index(part))
    if not out:
        raise ValueError("no days")
    return out


def in_business_hours(now: datetime, hours: str, days: str) -> bool:
    start, end = parse_hours(hours)
    return now.weekday() in parse_days(days) and start <= now.time() <= end

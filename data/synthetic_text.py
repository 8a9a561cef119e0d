"""The built-in translation task: dates written by people, in four languages -> ISO 8601.

"the 3rd of March, 2021", "mercredi 3 mars 2021", "3 de marzo de 2021", "am 3. März 2021" and
"3/3/21" all translate to "2021-03-03". It needs real sequence-to-sequence modelling: the output
reorders the input (day and year swap places), input lengths vary from 3 to 9 tokens, and both
sides have their own vocabulary. Numeric formats keep one convention per separator (``/`` is
month/day/year as in the US, ``.`` and ``-`` are day.month.year), so every source has one answer.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

MONTHS = {
    "en": "January February March April May June July August September October November December",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
}
WEEKDAYS = {
    "en": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "fr": "lundi mardi mercredi jeudi vendredi samedi dimanche",
    "es": "lunes martes miércoles jueves viernes sábado domingo",
    "de": "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag",
}
LANGUAGES = tuple(MONTHS)


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _names(date: dt.date, lang: str) -> tuple[str, str, str]:
    month = MONTHS[lang].split()[date.month - 1]
    return month, month[:3], WEEKDAYS[lang].split()[date.weekday()]


def _en(date: dt.date, rng: random.Random) -> str:
    month, short, weekday = _names(date, "en")
    d, y = date.day, date.year
    return rng.choice(
        [
            f"{month} {d}, {y}",
            f"{d} {month} {y}",
            f"the {_ordinal(d)} of {month}, {y}",
            f"{month} {_ordinal(d)}, {y}",
            f"{short} {d} {y}",
            f"{weekday}, {month} {d}, {y}",
            f"{short}. {d}, {y}",
        ]
    )


def _fr(date: dt.date, rng: random.Random) -> str:
    month, _, weekday = _names(date, "fr")
    d = "1er" if date.day == 1 else str(date.day)
    return rng.choice(
        [
            f"{d} {month} {date.year}",
            f"le {d} {month} {date.year}",
            f"{weekday} {d} {month} {date.year}",
        ]
    )


def _es(date: dt.date, rng: random.Random) -> str:
    month, _, weekday = _names(date, "es")
    d, y = date.day, date.year
    return rng.choice(
        [f"{d} de {month} de {y}", f"el {d} de {month} de {y}", f"{weekday}, {d} de {month} de {y}"]
    )


def _de(date: dt.date, rng: random.Random) -> str:
    month, _, weekday = _names(date, "de")
    d, y = date.day, date.year
    return rng.choice([f"{d}. {month} {y}", f"am {d}. {month} {y}", f"{weekday}, {d}. {month} {y}"])


def _numeric(date: dt.date, rng: random.Random) -> str:
    d, m, y = date.day, date.month, date.year
    yy = rng.choice([str(y), f"{y % 100:02d}"])
    return rng.choice(
        [
            f"{m}/{d}/{yy}",
            f"{m:02d}/{d:02d}/{yy}",
            f"{d:02d}.{m:02d}.{yy}",
            f"{d}.{m}.{y}",
            f"{d:02d}-{m:02d}-{y}",
        ]
    )


WRITERS: dict[str, Callable[[dt.date, random.Random], str]] = {
    "en": _en,
    "fr": _fr,
    "es": _es,
    "de": _de,
    "numeric": _numeric,
}


def generate_dates(
    count: int, seed: int, first_year: int = 1950, last_year: int = 2049, styles=tuple(WRITERS)
) -> list[tuple[str, str]]:
    """``count`` (written date, ISO date) pairs, deterministic for ``seed``.

    Two-digit years are unambiguous because the range spans one century ending in ``last_year``.
    """
    if last_year - first_year >= 100:
        raise ValueError(
            f"Year range {first_year}-{last_year} spans more than 100 years; two-digit years "
            "would be ambiguous. Expected last_year - first_year < 100."
        )
    unknown = sorted(set(styles) - set(WRITERS))
    if unknown:
        raise ValueError(f"Unknown date styles {unknown}. Expected some of {sorted(WRITERS)}")
    rng = random.Random(seed)
    start = dt.date(first_year, 1, 1).toordinal()
    end = dt.date(last_year, 12, 31).toordinal()
    pairs = []
    for _ in range(count):
        date = dt.date.fromordinal(rng.randint(start, end))
        pairs.append((WRITERS[rng.choice(styles)](date, rng), date.isoformat()))
    return pairs

"""CSV: UTF-8 with a byte-order mark, so Excel reads accents right (without
it Excel assumes the locale's code page); RFC 4180: comma separated, CRLF
between rows, quotes only where needed.

On PostgreSQL a QuerySet's CSV is written by COPY instead
(reports.writers.pg_copy); this writer serves everything else."""

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from reports.writers import Document
from reports.writers.cells import csv_converter, neutralise

# Large writes, few system calls.
BUFFER_BYTES = 1 << 20


def write(path: Path, document: Document, rows: Iterable[Sequence]) -> None:
    convert = csv_converter(document.tz)
    with open(path, "w", encoding="utf-8-sig", newline="", buffering=BUFFER_BYTES) as file:
        out = csv.writer(file)
        out.writerow([neutralise(column.heading) for column in document.columns])
        out.writerows([convert(value) for value in row] for row in rows)

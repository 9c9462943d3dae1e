"""Progress bars that behave in terminals, notebooks and papermill logs alike.

Under papermill a bar turns into one log line per refresh, so bars refresh at most every few
seconds there; `QVIDCAP_PROGRESS=0` turns them off.
"""
from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, **kwargs) -> tqdm:
    disable = os.environ.get("QVIDCAP_PROGRESS", "1") == "0"
    headless = "PAPERMILL_EXECUTION" in os.environ or os.environ.get("CI") == "true"
    return tqdm(iterable, desc=desc, total=total, disable=disable,
                mininterval=5.0 if headless else 0.5, dynamic_ncols=True, **kwargs)

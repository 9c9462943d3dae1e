"""Progress bars that behave in terminals, notebooks and papermill logs alike.

Headless runs (papermill through `qvidcap.runtime.study` or the tests, which set `QVIDCAP_HEADLESS=1`, and CI)
get plain text bars that refresh at most every 30 seconds: widget bars would be frozen JSON in an executed
notebook and one log line per refresh. `QVIDCAP_PROGRESS=0` turns bars off.
"""
from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")


def headless() -> bool:
    return os.environ.get("QVIDCAP_HEADLESS") == "1" or os.environ.get("CI") == "true"


def progress(iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, **kwargs):
    if headless():
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    disable = os.environ.get("QVIDCAP_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, mininterval=30.0 if headless() else 0.5,
                dynamic_ncols=True, **kwargs)

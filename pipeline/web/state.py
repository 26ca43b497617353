"""What the routes share: the settings, the task board, the catalogue and the job tables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, HTTPException, Request

from .catalog_index import CatalogIndex
from .jobs import JobTables
from .settings import Settings
from .tasks import TaskBoard

T = TypeVar("T")
# Calls that wait on a store (--jobs: listings, tables, images; --catalog) run in threads of that
# store's own, this many at most: a bucket that hangs holds these, while the pool that serves
# every other request (40 threads) and the other store's threads stay free. More such requests
# wait for one of them.
STORAGE_THREADS = 8
STORES = ("jobs", "catalog")


@dataclass
class WebState:
    settings: Settings
    tasks: TaskBoard
    catalog_index: CatalogIndex | None  # None: started without --catalog
    job_tables: JobTables | None  # None: started without --jobs
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict, repr=False)

    async def storage(self, store: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)` in one of the STORAGE_THREADS of `store` (one of STORES)."""
        if store not in STORES:
            raise ValueError(f"store: one of {STORES}, not {store!r}")
        if store not in self._limiters:  # made on the event loop, at first use
            self._limiters[store] = anyio.CapacityLimiter(STORAGE_THREADS)
        bound = functools.partial(call, *args, **kwargs)
        return await anyio.to_thread.run_sync(bound, limiter=self._limiters[store])

    @classmethod
    def from_settings(cls, settings: Settings) -> WebState:
        return cls(
            settings=settings,
            tasks=TaskBoard(
                max_pending=settings.max_pending,
                max_pending_per_client=settings.max_pending_per_client,
                idle_timeout=settings.idle_timeout,
                keep_results=settings.keep_results,
                debug=settings.debug,
            ),
            catalog_index=CatalogIndex(settings.catalog, settings.s3) if settings.catalog else None,
            job_tables=JobTables(
                settings.jobs,
                settings.s3,
                settings.debug,
                settings.catalog,
                settings.allow_sources,
            )
            if settings.jobs
            else None,
        )

    def catalog(self) -> CatalogIndex:
        if self.catalog_index is None:
            raise HTTPException(404, "this server was started without --catalog")
        return self.catalog_index

    def jobs(self) -> JobTables:
        if self.job_tables is None:
            raise HTTPException(404, "this server was started without --jobs")
        return self.job_tables


def web_state(request: Request) -> WebState:
    return request.app.state.web


State = Annotated[WebState, Depends(web_state)]

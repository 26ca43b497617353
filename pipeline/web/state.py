"""What the routes share: the settings, the task board, the catalogue and the job tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from .catalogue import CatalogIndex
from .jobs import JobTables
from .settings import Settings
from .tasks import TaskBoard


@dataclass
class WebState:
    settings: Settings
    tasks: TaskBoard
    catalog_index: CatalogIndex | None  # None: started without --catalog
    job_tables: JobTables | None  # None: started without --jobs

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
            job_tables=JobTables(settings.jobs, settings.s3, settings.debug, settings.catalog)
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

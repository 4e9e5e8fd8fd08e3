"""Reports over the analytics store, one project per request."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Response

from services.api import reporting
from services.api.analytics import queries as q
from services.api.context import ApiDep
from services.api.permissions import P
from services.api.problems import ERRORS
from services.api.reporting import Report, ReportParams
from services.api.schemas import ReportOut
from services.api.security import Needs, VisibleProjects

router = APIRouter(prefix="/reports", tags=["reports"], responses=ERRORS)


_FILES: dict[str, Any] = {
    "text/csv": {}, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}, "application/x-dbf": {},
}  # fmt: skip


@router.get(
    "/{report}",
    response_model=ReportOut,
    dependencies=[Needs(P.REPORTS_READ)],
    responses={200: {"description": "the report as JSON, or as a file with ?format=", "content": _FILES}},
)
async def get_report(
    api: ApiDep,
    scope: VisibleProjects,
    report: Report,
    project_id: Annotated[str, Query(min_length=1, max_length=64)],
    start: Annotated[date | None, Query(description="first local day (default: 30 days ago)")] = None,
    end: Annotated[date | None, Query(description="day after the last (default: tomorrow)")] = None,
    period: Annotated[q.Period, Query()] = "day",
    group_by: Annotated[q.GroupBy, Query()] = "meter",
    format: Annotated[
        Literal["json", "csv", "xlsx", "dbf"], Query(description="json, or a file (E4)")
    ] = "json",
) -> ReportOut | Response:
    project = scope.one(project_id)
    end = end or date.today() + timedelta(days=1)
    start = start or (end - timedelta(days=31) if end > date(1970, 2, 1) else end)
    params = ReportParams(start, end, period, group_by)
    if format != "json":
        rows = await reporting.report(api.clickhouse, report, project, params, raw=True)
        file = reporting.export_file(report, project, rows, format)
        disposition = f"attachment; filename*=UTF-8''{quote(file.filename)}"
        return Response(
            file.content, media_type=file.media_type, headers={"Content-Disposition": disposition}
        )
    columns, items = await reporting.report(api.clickhouse, report, project, params)
    return ReportOut(report=report.value, project_id=project, columns=columns, rows=items)

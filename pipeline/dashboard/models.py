"""The triage models on the dashboard (issue #16): which model routes, which runs in shadow, and how right
each has been by officers' judgement (their re-routes, dispatches and confirmations since it started)."""

from __future__ import annotations

from typing import Any

#: the window the live model's running accuracy is counted over
WINDOW = "7 days"


async def model_rows(conn: Any) -> dict[str, Any] | None:
    """Live and shadow model with their running accuracy; None before the registry exists."""
    have = await (await conn.execute("SELECT to_regclass('triage_models') IS NOT NULL")).fetchone()
    if not have or not have[0]:
        return None
    roles = {
        # a model shadowed again after being live keeps its old live_since: each role has its own time
        r[0]: {"model": r[1], "since": r[2] if r[0] == "live" else r[3]}
        for r in await (
            await conn.execute(
                "SELECT role, model_id, live_since, shadow_since FROM triage_models "
                "WHERE role IN ('live', 'shadow')"
            )
        ).fetchall()
    }
    began = {role: v["since"] for role, v in roles.items()}
    for v in roles.values():
        v["since"] = v["since"].isoformat() if v["since"] else None
    live = roles.get("live") or {"model": "lexicon-v1", "since": None}
    # Running accuracy of the live model: of the reports it routed and officers judged since, the share
    # whose agency they kept (a confirmation, or a Disposisi to the same agency's office).
    judged = await (
        await conn.execute(
            "SELECT count(*) FILTER (WHERE kind = 'confirm'), count(*) FILTER (WHERE kind = 'reroute') "
            "FROM route_labels WHERE classifier = %s AND labelled_at > now() - %s::interval",
            (live["model"], WINDOW),
        )
    ).fetchone()
    kept, moved = judged or (0, 0)
    live.update({"judged": kept + moved, "accuracy": kept / (kept + moved) if kept + moved else None})
    out: dict[str, Any] = {"live": live, "shadow": None, "window": WINDOW}
    shadow = roles.get("shadow")
    if shadow is not None:
        row = await (
            await conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE s.agency IS NOT DISTINCT FROM l.agency), "
                "count(lab.new_agency), count(*) FILTER (WHERE lab.new_agency = s.agency), "
                "count(*) FILTER (WHERE lab.new_agency = l.agency) "
                "FROM model_decisions s "
                "JOIN model_decisions l ON l.report_id = s.report_id AND l.role = 'live' "
                "LEFT JOIN LATERAL (SELECT new_agency FROM route_labels x WHERE x.report_id = s.report_id "
                "  ORDER BY labelled_at DESC, label_id DESC LIMIT 1) lab ON true "
                "WHERE s.model_id = %s AND s.role = 'shadow' "
                "AND (%s::timestamptz IS NULL OR s.decided_at >= %s)",  # this shadow run only
                (shadow["model"], began["shadow"], began["shadow"]),
            )
        ).fetchone()
        n, agree, labelled, shadow_right, live_right = row or (0, 0, 0, 0, 0)
        shadow.update(
            {
                "decisions": n,
                "agreement": agree / n if n else None,
                "labelled": labelled,
                "accuracy": shadow_right / labelled if labelled else None,
                "live_accuracy": live_right / labelled if labelled else None,
            }
        )
        out["shadow"] = shadow
    return out

"""Records -> the JSON CVAT 2.80 sends, field for field as cvat-sdk's *Read models declare them.

Call with `state.lock` held. `base` is the server's root URL (for `url` fields).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .records import BackgroundRequest, CloudStorage, Job, Label, Project, Task, User
from .state import FakeCvatState

SERVER_VERSION = "2.80.0"


def iso(value: datetime | None) -> str | None:
    """DRF's format: always microseconds, UTC as `Z`."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + (
        "Z" if value.utcoffset().total_seconds() == 0 else value.strftime("%z")
    )


def basic_user(state: FakeCvatState, user_id: int | None, base: str) -> dict[str, Any] | None:
    user = state.users.get(user_id) if user_id is not None else None
    return None if user is None else _user_summary(user, base)


def _user_summary(user: User, base: str) -> dict[str, Any]:
    """CVAT's BasicUser fields; MetaUser adds to them."""
    return {
        "url": f"{base}/api/users/{user.id}",
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
    }


def meta_user(user: User, base: str) -> dict[str, Any]:
    return {
        **_user_summary(user, base),
        "email": user.email,
        "groups": ["admin"] if user.is_superuser else ["user"],
        "is_staff": user.is_superuser,
        "is_superuser": user.is_superuser,
        "is_active": True,
        "last_login": None,
        "date_joined": iso(user.date_joined),
        "has_analytics_access": user.is_superuser,
    }


def label(lb: Label) -> dict[str, Any]:
    out = {
        "id": lb.id,
        "name": lb.name,
        "color": lb.color,
        "attributes": lb.attributes,
        "type": lb.type,
        "svg": "",
        "sublabels": [],
        "has_parent": False,
        "parent_id": None,
    }
    if lb.project_id is not None:
        out["project_id"] = lb.project_id
    else:
        out["task_id"] = lb.task_id
    return out


def project(state: FakeCvatState, p: Project, base: str) -> dict[str, Any]:
    tasks = [t for t in state.tasks.values() if t.project_id == p.id]
    return {
        "url": f"{base}/api/projects/{p.id}",
        "id": p.id,
        "name": p.name,
        "owner": basic_user(state, p.owner_id, base),
        "assignee": basic_user(state, p.assignee_id, base),
        "guide_id": None,
        "bug_tracker": p.bug_tracker,
        "task_subsets": sorted({t.subset for t in tasks if t.subset}),
        "created_date": iso(p.created_date),
        "updated_date": iso(p.updated_date),
        "status": "annotation",
        "dimension": "2d" if tasks else None,
        "organization": None,
        "organization_id": None,
        "target_storage": None,
        "source_storage": None,
        "assignee_updated_date": None,
        "tasks": {"count": len(tasks), "url": f"{base}/api/tasks?project_id={p.id}"},
        "labels": {"url": f"{base}/api/labels?project_id={p.id}"},
    }


def task(state: FakeCvatState, t: Task, base: str) -> dict[str, Any]:
    jobs = [state.jobs[j] for j in t.job_ids]
    project_name = state.projects[t.project_id].name if t.project_id in state.projects else None
    has_data = t.data_id is not None
    return {
        "url": f"{base}/api/tasks/{t.id}",
        "id": t.id,
        "name": t.name,
        "project_id": t.project_id,
        "project_name": project_name,
        "owner": basic_user(state, t.owner_id, base),
        "assignee": basic_user(state, t.assignee_id, base),
        "guide_id": None,
        "bug_tracker": t.bug_tracker,
        "created_date": iso(t.created_date),
        "updated_date": iso(t.updated_date),
        "overlap": t.overlap if t.overlap is not None else (0 if has_data else None),
        "segment_size": t.segment_size,
        "status": state.task_status(t),
        "data_chunk_size": (t.chunk_size or 72) if has_data else None,
        "data_compressed_chunk_type": "imageset" if has_data else None,
        "data_original_chunk_type": "imageset" if has_data else None,
        "data_cloud_storage_id": t.cloud_storage_id,
        "data": t.data_id,
        "size": t.size,
        "image_quality": t.image_quality,
        "dimension": "2d",
        "mode": "annotation" if has_data else "",
        # the SDK model rejects media_type null, so a task without data has ""
        "media_type": "image" if has_data else "",
        "subset": t.subset,
        "organization": None,
        "organization_id": None,
        "target_storage": None,
        "source_storage": None,
        "assignee_updated_date": None,
        "validation_mode": None,
        "initial_replicas": 0,
        "jobs": {
            "count": len(jobs),
            "completed": sum(j.status == "completed" for j in jobs),
            "validation": sum(j.status == "validation" for j in jobs),
            "url": f"{base}/api/jobs?task_id={t.id}",
        },
        "labels": {"url": f"{base}/api/labels?task_id={t.id}"},
    }


def job(state: FakeCvatState, j: Job, base: str) -> dict[str, Any]:
    t = state.tasks[j.task_id]
    project_name = state.projects[t.project_id].name if t.project_id in state.projects else None
    return {
        "url": f"{base}/api/jobs/{j.id}",
        "id": j.id,
        "task_id": j.task_id,
        "task_name": t.name,
        "project_id": t.project_id,
        "project_name": project_name,
        "assignee": basic_user(state, j.assignee_id, base),
        "guide_id": None,
        "dimension": "2d",
        "mode": "annotation",
        "media_type": "image",
        "bug_tracker": t.bug_tracker or None,
        "status": j.status,
        "stage": j.stage,
        "state": j.state,
        "frame_count": j.frame_count,
        "start_frame": j.start_frame,
        "stop_frame": j.stop_frame,
        "data_chunk_size": t.chunk_size or 72,
        "data_compressed_chunk_type": "imageset",
        "data_original_chunk_type": "imageset",
        "created_date": iso(j.created_date),
        "updated_date": iso(j.updated_date),
        "type": j.type,
        "organization": None,
        "target_storage": None,
        "source_storage": None,
        "assignee_updated_date": iso(j.assignee_updated_date),
        "parent_job_id": None,
        "replicas_count": 0,
        "issues": {"url": f"{base}/api/issues?job_id={j.id}", "count": 0},
        "labels": {"url": f"{base}/api/labels?job_id={j.id}"},
    }


def data_meta(t: Task) -> dict[str, Any]:
    return {
        "chunks_updated_date": iso(t.updated_date),
        "chunk_size": t.chunk_size or 72,
        "size": t.size,
        "image_quality": t.image_quality,
        "start_frame": 0,
        "stop_frame": max(t.size - 1, 0),
        "frame_filter": "",
        "deleted_frames": sorted(t.deleted_frames),
        "included_frames": None,
        "chapters": None,
        "storage": "cloud_storage" if t.cloud_storage_id is not None else "local",
        "cloud_storage_id": t.cloud_storage_id,
        "frames": [
            {"name": f.name, "width": f.width, "height": f.height, "related_files": 0, "has_related_context": False}
            for f in t.frames
        ],
    }


def cloud_storage(state: FakeCvatState, s: CloudStorage, base: str) -> dict[str, Any]:
    return {
        "id": s.id,
        "provider_type": s.provider_type,
        "resource": s.resource,
        "display_name": s.display_name,
        "credentials_type": s.credentials_type,
        "owner": basic_user(state, s.owner_id, base),
        "manifests": s.manifests,
        "created_date": iso(s.created_date),
        "updated_date": iso(s.updated_date),
        "specific_attributes": s.specific_attributes,
        "description": s.description,
        "organization": None,
    }


def request(state: FakeCvatState, r: BackgroundRequest) -> dict[str, Any]:
    owner = state.users.get(r.owner_id)
    return {
        "id": r.id,
        "status": r.status,
        "message": r.message,
        "progress": r.progress,
        "created_date": iso(r.created_date),
        "started_date": iso(r.started_date),
        "finished_date": iso(r.finished_date),
        "expiry_date": iso(r.expiry_date),
        "owner": {"id": owner.id, "username": owner.username} if owner else None,
        "result_url": r.result_url,
        "result_id": r.result_id,
        "operation": {
            "type": r.operation_type,
            "target": r.target,
            "project_id": None,
            "task_id": r.task_id,
            "job_id": None,
            "format": r.format,
            "function_id": None,
            "org_id": None,
        },
    }


def about() -> dict[str, Any]:
    return {
        "name": "Computer Vision Annotation Tool",
        "description": "Fake CVAT server for tests",
        "version": SERVER_VERSION,
        "logo_url": "",
        "subtitle": "",
    }


EXPORT_FORMATS = ("COCO 1.0",)


def annotation_formats() -> dict[str, Any]:
    def fmt(name: str, ext: str) -> dict[str, Any]:
        return {"name": name, "ext": ext, "version": name.rsplit(" ", 1)[-1], "enabled": True, "dimension": "2d"}

    return {
        "importers": [fmt("COCO 1.0", "JSON, ZIP"), fmt("CVAT 1.1", "XML, ZIP")],
        "exporters": [fmt("COCO 1.0", "ZIP")],
    }

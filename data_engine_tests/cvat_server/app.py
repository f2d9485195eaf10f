"""The WSGI application: logging, fault injection, auth, routing, and one handler per endpoint.

Handlers translate HTTP to `FakeCvatState` calls and records to JSON via `serializers`; the rules
live in the state. Paths are matched without their trailing slash, since the SDK uses both forms.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import serializers as ser
from .listing import BadQuery, FieldSpec, ListSpec, PageNotFound, apply_query, paginate
from .state import ApiError, FakeCvatState

PUBLIC_PATHS = ("/api/server/about",)


def json_response(status: int, data: Any = None, headers: dict[str, str] | None = None) -> Response:
    body = b"" if data is None else json.dumps(data).encode()
    return Response(body, status=status, headers=headers, mimetype="application/json")


def _bool_param(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


ROUTES = [
    ("GET", "/api/server/about", "about"),
    ("GET", "/api/server/annotation/formats", "formats"),
    ("GET", "/api/users/self", "user_self"),
    ("GET", "/api/users", "user_list"),
    ("GET", "/api/users/<int:id>", "user_retrieve"),
    ("GET", "/api/projects", "project_list"),
    ("POST", "/api/projects", "project_create"),
    ("GET", "/api/projects/<int:id>", "project_retrieve"),
    ("PATCH", "/api/projects/<int:id>", "project_update"),
    ("DELETE", "/api/projects/<int:id>", "project_delete"),
    ("GET", "/api/labels", "label_list"),
    ("GET", "/api/labels/<int:id>", "label_retrieve"),
    ("GET", "/api/tasks", "task_list"),
    ("POST", "/api/tasks", "task_create"),
    ("GET", "/api/tasks/<int:id>", "task_retrieve"),
    ("PATCH", "/api/tasks/<int:id>", "task_update"),
    ("DELETE", "/api/tasks/<int:id>", "task_delete"),
    ("POST", "/api/tasks/<int:id>/data", "task_data"),
    ("PATCH", "/api/tasks/<int:id>/data/<file_id>", "tus_patch"),
    ("HEAD", "/api/tasks/<int:id>/data/<file_id>", "tus_head"),
    ("GET", "/api/tasks/<int:id>/data/meta", "task_data_meta"),
    ("GET", "/api/tasks/<int:id>/annotations", "annotations_get"),
    ("PUT", "/api/tasks/<int:id>/annotations", "annotations_put"),
    ("PATCH", "/api/tasks/<int:id>/annotations", "annotations_patch"),
    ("DELETE", "/api/tasks/<int:id>/annotations", "annotations_delete"),
    ("POST", "/api/tasks/<int:id>/dataset/export", "export_create"),
    ("GET", "/api/tasks/<int:id>/dataset/download", "export_download"),
    ("GET", "/api/jobs", "job_list"),
    ("GET", "/api/jobs/<int:id>", "job_retrieve"),
    ("PATCH", "/api/jobs/<int:id>", "job_update"),
    ("GET", "/api/cloudstorages", "cloudstorage_list"),
    ("POST", "/api/cloudstorages", "cloudstorage_create"),
    ("GET", "/api/cloudstorages/<int:id>", "cloudstorage_retrieve"),
    ("GET", "/api/requests", "request_list"),
    ("GET", "/api/requests/<path:rq_id>", "request_retrieve"),
]


class CvatApp:
    def __init__(self, state: FakeCvatState) -> None:
        self.state = state
        self.url_map = Map(
            [Rule(path, endpoint=name, methods=[method]) for method, path, name in ROUTES],
            strict_slashes=False,
        )
        self.specs = self._list_specs()

    # --- WSGI entry ------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        request.get_data(cache=True)  # always drain the body: keep-alive connections stay in sync
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        entry = self.state.log_request(request.method, path, request.args.to_dict(flat=False))
        delay, fault = self.state.faults.take_http(request.method, path)
        if delay:
            time.sleep(delay)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            response = json_response(fault.status, {"detail": fault.detail}, headers)
        elif path not in PUBLIC_PATHS and not self._authorized(request):
            response = json_response(401, {"detail": "Authentication credentials were not provided."})
        else:
            response = self._route(request, path)
        entry.status = response.status_code
        return response

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme in ("Bearer", "Token") and token == self.state.token

    def _route(self, request: Request, path: str) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match(path, method=request.method)
            handler: Callable[..., Response] = getattr(self, "h_" + endpoint)
            return handler(request, request.host_url.rstrip("/"), **args)
        except MethodNotAllowed:
            return json_response(405, {"detail": f'Method "{request.method}" not allowed.'})
        except NotFound:
            return json_response(404, {"detail": "Not found."})
        except HTTPException as e:
            return json_response(e.code or 500, {"detail": e.description})
        except ApiError as e:
            return json_response(e.status, {"detail": e.detail})
        except PageNotFound as e:
            return json_response(404, {"detail": str(e)})
        except BadQuery as e:
            return json_response(400, {"detail": str(e)})

    # --- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if request.mimetype == "application/json" or not request.mimetype:
            data = request.get_data()
            try:
                return json.loads(data) if data else {}
            except ValueError:
                raise ApiError(400, "JSON parse error") from None
        return request.form.to_dict()

    def _list(self, request: Request, base: str, path: str, spec_name: str, records, serialize) -> Response:
        query = request.args.to_dict()
        with self.state.lock:
            items = apply_query(list(records), self.specs[spec_name], query)
            page, meta = paginate(items, query, base + path)
            return json_response(200, {**meta, "results": [serialize(r) for r in page]})

    def _list_specs(self) -> dict[str, ListSpec]:
        st = self.state

        def username(user_id):
            user = st.users.get(user_id)
            return user.username if user else None

        def project_name(project_id):
            project = st.projects.get(project_id)
            return project.name if project else None

        date = "datetime"
        tasks = ListSpec(
            {
                "id": FieldSpec(lambda t: t.id, "int"),
                "name": FieldSpec(lambda t: t.name),
                "project_id": FieldSpec(lambda t: t.project_id, "int"),
                "project_name": FieldSpec(lambda t: project_name(t.project_id)),
                "status": FieldSpec(st.task_status),
                "subset": FieldSpec(lambda t: t.subset),
                "owner": FieldSpec(lambda t: username(t.owner_id)),
                "assignee": FieldSpec(lambda t: username(t.assignee_id)),
                "created_date": FieldSpec(lambda t: t.created_date, date),
                "updated_date": FieldSpec(lambda t: t.updated_date, date),
                "mode": FieldSpec(lambda t: "annotation" if t.data_id else ""),
                "dimension": FieldSpec(lambda t: "2d"),
                "media_type": FieldSpec(lambda t: "image" if t.data_id else ""),
                "tracker_link": FieldSpec(lambda t: t.bug_tracker),
                "validation_mode": FieldSpec(lambda t: None),
            },
        )
        tasks.simple_filters = {
            k: k
            for k in (
                "name",
                "project_id",
                "project_name",
                "status",
                "subset",
                "owner",
                "assignee",
                "mode",
                "dimension",
                "tracker_link",
                "validation_mode",
            )
        }
        jobs = ListSpec(
            {
                "id": FieldSpec(lambda j: j.id, "int"),
                "task_id": FieldSpec(lambda j: j.task_id, "int"),
                "project_id": FieldSpec(lambda j: st.tasks[j.task_id].project_id, "int"),
                "project_name": FieldSpec(lambda j: project_name(st.tasks[j.task_id].project_id)),
                "task_name": FieldSpec(lambda j: st.tasks[j.task_id].name),
                "stage": FieldSpec(lambda j: j.stage),
                "state": FieldSpec(lambda j: j.state),
                "type": FieldSpec(lambda j: j.type),
                "assignee": FieldSpec(lambda j: username(j.assignee_id)),
                "updated_date": FieldSpec(lambda j: j.updated_date, date),
                "dimension": FieldSpec(lambda j: "2d"),
                "mode": FieldSpec(lambda j: "annotation"),
                "media_type": FieldSpec(lambda j: "image"),
                "parent_job_id": FieldSpec(lambda j: None, "int"),
            },
        )
        jobs.simple_filters = {
            k: k
            for k in (
                "task_id",
                "project_id",
                "project_name",
                "task_name",
                "stage",
                "state",
                "type",
                "assignee",
                "dimension",
                "mode",
                "parent_job_id",
            )
        }
        projects = ListSpec(
            {
                "id": FieldSpec(lambda p: p.id, "int"),
                "name": FieldSpec(lambda p: p.name),
                "owner": FieldSpec(lambda p: username(p.owner_id)),
                "assignee": FieldSpec(lambda p: username(p.assignee_id)),
                "status": FieldSpec(lambda p: "annotation"),
                "updated_date": FieldSpec(lambda p: p.updated_date, date),
            },
            simple_filters={"name": "name", "owner": "owner", "assignee": "assignee", "status": "status"},
        )
        labels = ListSpec(
            {
                "id": FieldSpec(lambda lb: lb.id, "int"),
                "name": FieldSpec(lambda lb: lb.name),
                "color": FieldSpec(lambda lb: lb.color),
                "type": FieldSpec(lambda lb: lb.type),
                "parent": FieldSpec(lambda lb: None),
                "parent_id": FieldSpec(lambda lb: None, "int"),
            },
            default_sort="id",
            simple_filters={"name": "name", "color": "color", "type": "type"},
        )
        storages = ListSpec(
            {
                "id": FieldSpec(lambda s: s.id, "int"),
                "name": FieldSpec(lambda s: s.display_name),
                "resource": FieldSpec(lambda s: s.resource),
                "provider_type": FieldSpec(lambda s: s.provider_type),
                "credentials_type": FieldSpec(lambda s: s.credentials_type),
                "description": FieldSpec(lambda s: s.description),
                "owner": FieldSpec(lambda s: username(s.owner_id)),
            },
            simple_filters={k: k for k in ("name", "resource", "provider_type", "credentials_type", "owner")},
        )
        users = ListSpec(
            {
                "id": FieldSpec(lambda u: u.id, "int"),
                "username": FieldSpec(lambda u: u.username),
                "first_name": FieldSpec(lambda u: u.first_name),
                "last_name": FieldSpec(lambda u: u.last_name),
                "is_active": FieldSpec(lambda u: "true"),
            },
            default_sort="id",
            simple_filters={k: k for k in ("username", "first_name", "last_name", "is_active")},
        )
        requests = ListSpec(
            {
                "action": FieldSpec(lambda r: r.action),
                "status": FieldSpec(lambda r: r.status),
                "task_id": FieldSpec(lambda r: r.task_id, "int"),
                "target": FieldSpec(lambda r: r.target),
                "subresource": FieldSpec(lambda r: r.subresource),
                "format": FieldSpec(lambda r: r.format),
                "project_id": FieldSpec(lambda r: None, "int"),
                "job_id": FieldSpec(lambda r: None, "int"),
                "org": FieldSpec(lambda r: None),
                "org_id": FieldSpec(lambda r: None, "int"),
                "created_date": FieldSpec(lambda r: r.created_date, date),
            },
            default_sort="-created_date",
            simple_filters={
                k: k for k in ("action", "status", "task_id", "target", "subresource", "format", "project_id", "job_id")
            },
        )
        return {
            "tasks": tasks,
            "jobs": jobs,
            "projects": projects,
            "labels": labels,
            "cloudstorages": storages,
            "users": users,
            "requests": requests,
        }

    # --- server, users ---------------------------------------------------------------------------

    def h_about(self, request, base):
        return json_response(200, ser.about())

    def h_formats(self, request, base):
        return json_response(200, ser.annotation_formats())

    def h_user_self(self, request, base):
        with self.state.lock:
            return json_response(200, ser.meta_user(self.state.admin, base))

    def h_user_list(self, request, base):
        return self._list(
            request, base, "/api/users", "users", self.state.users.values(), lambda u: ser.meta_user(u, base)
        )

    def h_user_retrieve(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.meta_user(self.state.lookup(self.state.users, id, "User"), base))

    # --- projects and labels ---------------------------------------------------------------------

    def h_project_list(self, request, base):
        return self._list(
            request,
            base,
            "/api/projects",
            "projects",
            self.state.projects.values(),
            lambda p: ser.project(self.state, p, base),
        )

    def h_project_create(self, request, base):
        body = self._body(request)
        if not body.get("name"):
            raise ApiError(400, "name: This field is required.")
        with self.state.lock:
            project = self.state.create_project(
                body["name"],
                body.get("labels", []),
                owner_id=body.get("owner_id"),
                assignee_id=body.get("assignee_id"),
                bug_tracker=body.get("bug_tracker", ""),
            )
            return json_response(201, ser.project(self.state, project, base))

    def h_project_retrieve(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.project(self.state, self.state.get_project(id), base))

    def h_project_update(self, request, base, id):
        with self.state.lock:
            project = self.state.update_project(id, self._body(request))
            return json_response(200, ser.project(self.state, project, base))

    def h_project_delete(self, request, base, id):
        self.state.delete_project(id)
        return Response(status=204)

    def h_label_list(self, request, base):
        args = request.args
        with self.state.lock:
            if args.get("job_id"):
                records = self.state.labels_of(task_id=self.state.get_job(int(args["job_id"])).task_id)
            elif args.get("task_id") or args.get("project_id"):
                records = self.state.labels_of(
                    task_id=int(args["task_id"]) if args.get("task_id") else None,
                    project_id=int(args["project_id"]) if args.get("project_id") else None,
                )
            else:
                records = list(self.state.labels.values())
            return self._list(request, base, "/api/labels", "labels", records, ser.label)

    def h_label_retrieve(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.label(self.state.lookup(self.state.labels, id, "Label")))

    # --- tasks -----------------------------------------------------------------------------------

    def h_task_list(self, request, base):
        return self._list(
            request, base, "/api/tasks", "tasks", self.state.tasks.values(), lambda t: ser.task(self.state, t, base)
        )

    def h_task_create(self, request, base):
        body = self._body(request)
        if not body.get("name"):
            raise ApiError(400, "name: This field is required.")
        with self.state.lock:
            task = self.state.create_task(
                body["name"],
                project_id=body.get("project_id"),
                labels=body.get("labels", []),
                segment_size=body.get("segment_size") or 0,
                overlap=body.get("overlap"),
                owner_id=body.get("owner_id"),
                assignee_id=body.get("assignee_id"),
                bug_tracker=body.get("bug_tracker", ""),
                subset=body.get("subset", ""),
            )
            return json_response(201, ser.task(self.state, task, base))

    def h_task_retrieve(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.task(self.state, self.state.get_task(id), base))

    def h_task_update(self, request, base, id):
        with self.state.lock:
            task = self.state.update_task(id, self._body(request))
            return json_response(200, ser.task(self.state, task, base))

    def h_task_delete(self, request, base, id):
        self.state.delete_task(id)
        return Response(status=204)

    def h_task_data_meta(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.data_meta(self.state.get_task(id)))

    def h_task_data(self, request, base, id):
        """POST .../data/: plain JSON, or the SDK's upload protocol (Upload-Start/Multiple/Finish, TUS)."""
        st = self.state
        st.get_task(id)
        headers = request.headers
        if "Upload-Start" in headers:
            with st.lock:
                st.uploads[id] = {}
            return Response(status=202)
        if "Upload-Multiple" in headers:
            with st.lock:
                files = st.uploads.setdefault(id, {})
                for storage in request.files.values():
                    files[os.path.basename(storage.filename)] = storage.read()
            return json_response(200, {})
        if "Tus-Resumable" in headers:
            return self._tus_create(request, base, id)
        payload = self._body(request)
        if "Upload-Finish" in headers:
            with st.lock:
                payload["client_files"] = st.uploads.pop(id, {})
            if not payload["client_files"]:
                raise ApiError(400, "No files were uploaded")
        elif not payload.get("server_files") and not payload.get("remote_files"):
            raise ApiError(400, "No media data found")
        rq = st.start_task_data(id, payload)
        return json_response(202, {"rq_id": rq.id})

    def _tus_create(self, request, base, task_id):
        metadata = {}
        for item in request.headers.get("Upload-Metadata", "").split(","):
            if item.strip():
                key, _, value = item.strip().partition(" ")
                metadata[key] = base64.b64decode(value).decode()
        if "filename" not in metadata:
            raise ApiError(400, "Upload-Metadata must contain filename")
        file_id = uuid.uuid4().hex
        with self.state.lock:
            self.state.tus_uploads[file_id] = {
                "task_id": task_id,
                "filename": os.path.basename(metadata["filename"]),
                "length": int(request.headers.get("Upload-Length", 0)),
                "data": bytearray(),
            }
        return Response(
            status=201,
            headers={
                "Location": f"{base}/api/tasks/{task_id}/data/{file_id}",
                "Tus-Resumable": "1.0.0",
                "Upload-Filename": os.path.basename(metadata["filename"]),
            },
        )

    def h_tus_patch(self, request, base, id, file_id):
        with self.state.lock:
            upload = self.state.tus_uploads.get(file_id)
            if upload is None or upload["task_id"] != id:
                raise ApiError(404, "Upload not found")
            if int(request.headers.get("Upload-Offset", -1)) != len(upload["data"]):
                return Response(status=409, headers={"Upload-Offset": str(len(upload["data"]))})
            upload["data"] += request.get_data()
            if len(upload["data"]) >= upload["length"]:
                self.state.uploads.setdefault(id, {})[upload["filename"]] = bytes(upload["data"])
            return Response(status=204, headers={"Upload-Offset": str(len(upload["data"])), "Tus-Resumable": "1.0.0"})

    def h_tus_head(self, request, base, id, file_id):
        with self.state.lock:
            upload = self.state.tus_uploads.get(file_id)
            if upload is None:
                raise ApiError(404, "Upload not found")
            return Response(
                status=200,
                headers={
                    "Upload-Offset": str(len(upload["data"])),
                    "Upload-Length": str(upload["length"]),
                    "Tus-Resumable": "1.0.0",
                },
            )

    # --- annotations and export -----------------------------------------------------------------

    def h_annotations_get(self, request, base, id):
        return json_response(200, self.state.get_annotations(id))

    def h_annotations_put(self, request, base, id):
        self.state.change_annotations(id, "put", self._body(request))
        return json_response(200, self.state.get_annotations(id))

    def h_annotations_patch(self, request, base, id):
        action = request.args.get("action")
        if not action:
            raise ApiError(400, "action parameter is required")
        return json_response(200, self.state.change_annotations(id, action, self._body(request)))

    def h_annotations_delete(self, request, base, id):
        self.state.delete_annotations(id)
        return Response(status=204)

    def h_export_create(self, request, base, id):
        fmt = request.args.get("format")
        if not fmt:
            raise ApiError(400, "format: This field is required.")
        if fmt not in ser.EXPORT_FORMATS:
            raise ApiError(400, f"Unknown format specified for the request: {fmt!r} (the fake exports only COCO 1.0)")
        if request.args.get("location") == "cloud_storage":
            raise ApiError(400, "The fake CVAT server exports only to location=local")
        rq = self.state.start_export(id, fmt, save_images=_bool_param(request.args.get("save_images")), base_url=base)
        return json_response(202, {"rq_id": rq.id})

    def h_export_download(self, request, base, id):
        with self.state.lock:
            self.state.get_task(id)
            rq = self.state.get_request(request.args.get("rq_id", ""))
            if rq.task_id != id or rq.status != "finished" or rq.result is None:
                raise ApiError(400, "The export is not finished")
            filename = f"task_{id}_dataset_{rq.format.lower().replace(' ', '_')}.zip"
            return Response(
                rq.result,
                status=200,
                mimetype="application/zip",
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )

    # --- jobs ------------------------------------------------------------------------------------

    def h_job_list(self, request, base):
        return self._list(
            request, base, "/api/jobs", "jobs", self.state.jobs.values(), lambda j: ser.job(self.state, j, base)
        )

    def h_job_retrieve(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.job(self.state, self.state.get_job(id), base))

    def h_job_update(self, request, base, id):
        body = self._body(request)
        changes = {k: body[k] for k in ("stage", "state", "assignee") if k in body}
        with self.state.lock:
            job = self.state.update_job(id, **changes)
            return json_response(200, ser.job(self.state, job, base))

    # --- cloud storages and requests -----------------------------------------------------------

    def h_cloudstorage_list(self, request, base):
        return self._list(
            request,
            base,
            "/api/cloudstorages",
            "cloudstorages",
            self.state.cloud_storages.values(),
            lambda s: ser.cloud_storage(self.state, s, base),
        )

    def h_cloudstorage_create(self, request, base):
        body = self._body(request)
        missing = [k for k in ("provider_type", "resource", "display_name", "credentials_type") if not body.get(k)]
        if missing:
            raise ApiError(400, f"{missing[0]}: This field is required.")
        with self.state.lock:
            storage = self.state.add_cloud_storage(
                body["resource"],
                provider_type=body["provider_type"],
                credentials_type=body["credentials_type"],
                display_name=body["display_name"],
                specific_attributes=body.get("specific_attributes", ""),
                description=body.get("description", ""),
                manifests=list(body.get("manifests", [])),
            )
            return json_response(201, ser.cloud_storage(self.state, storage, base))

    def h_cloudstorage_retrieve(self, request, base, id):
        with self.state.lock:
            return json_response(200, ser.cloud_storage(self.state, self.state.get_cloud_storage(id), base))

    def h_request_list(self, request, base):
        return self._list(
            request,
            base,
            "/api/requests",
            "requests",
            self.state.requests.values(),
            lambda r: ser.request(self.state, r),
        )

    def h_request_retrieve(self, request, base, rq_id):
        with self.state.lock:
            return json_response(200, ser.request(self.state, self.state.get_request(rq_id)))

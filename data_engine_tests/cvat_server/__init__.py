"""A wire-level fake CVAT 2.80 server for tests that drive the real cvat-sdk over loopback HTTP.

with running_cvat_server() as server:
    client = make_client(server.url, access_token=server.token)
    ...
    server.state.complete_task(task_id)                 # reviewers accept every job
    server.faults.fail_next("PATCH", r"/annotations", status=503, times=2)
    assert server.state.count_requests("GET", r"^/api/tasks$") == 1
"""

from .faults import Faults
from .records import BackgroundRequest, CloudStorage, Frame, Job, Label, LoggedRequest, Project, Task, User
from .server import CvatServer, running_cvat_server
from .state import ApiError, FakeCvatState

__all__ = [
    "ApiError",
    "BackgroundRequest",
    "CloudStorage",
    "CvatServer",
    "FakeCvatState",
    "Faults",
    "Frame",
    "Job",
    "Label",
    "LoggedRequest",
    "Project",
    "Task",
    "User",
    "running_cvat_server",
]

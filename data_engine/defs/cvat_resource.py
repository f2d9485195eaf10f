"""The annotation-tool resource: CVAT when CVAT_URL is set (always in prod), else the local profile's
Label Studio (`data-engine annotation-server`). cvat-sdk is imported only when a run or a sensor tick
opens a backend. Locations (the credentials file, the frames' folders) are `dg.ResourceDependency` values
derived from the profile, out of the launchpad's reach (as in resources.py, hence no postponed annotations)."""

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from data_engine.annotation.backend import AnnotationBackend
    from data_engine.annotation.retry import RetryPolicy

LABEL_STUDIO_NOT_STARTED = (
    "no annotation server: start Label Studio with `uv run data-engine annotation-server` (in another terminal,"
    " same DATA_ENGINE_HOME), or set CVAT_URL and CVAT_ACCESS_TOKEN to use CVAT"
)


class AnnotationResource(dg.ConfigurableResource, ABC):
    """Where review tasks are made and watched."""

    tasks_per_tick: int = 100  # tasks the review sensor reads per tick (one page)
    request_timeout_s: float = 60.0
    # A write that timed out may still be applied by the tool: wait this long before looking whether it
    # landed and resending.
    late_write_settle_s: float = 30.0
    retry_attempts: int = 6
    retry_base_delay_s: float = 0.5
    retry_deadline_s: float = 180.0

    def client_limits(self, quick: bool) -> tuple["RetryPolicy", float]:
        """Retries and socket timeout of a backend's calls. A sensor tick (`quick`) makes a few calls; each
        retries for at most 10 s (a longer Retry-After ends it) plus one 8 s try: far below Dagster's 60 s."""
        from data_engine.annotation.retry import RetryPolicy

        if quick:
            retry = RetryPolicy(attempts=2, base_delay_s=self.retry_base_delay_s, max_delay_s=2.0, deadline_s=10.0)
            return retry, min(self.request_timeout_s, 8.0)
        retry = RetryPolicy(attempts=self.retry_attempts, base_delay_s=self.retry_base_delay_s, deadline_s=self.retry_deadline_s)
        return retry, self.request_timeout_s

    @property
    @abstractmethod
    def backend(self) -> str:
        """The tool's name as the fleet config's `annotation.backend` says it."""

    @property
    def configured(self) -> bool:
        return True

    @property
    def local_frames(self) -> bool:
        """Frames come from the local object root (uploaded or served), not from a cloud storage."""
        return True

    @abstractmethod
    def open(self, *, quick: bool = False, logger: logging.Logger | None = None) -> "AnnotationBackend":
        """A backend; `quick` bounds retries tighter (sensor ticks must end far below 60 s)."""


class CvatResource(AnnotationResource):
    """CVAT through cvat-sdk. `access_token` comes from CVAT_ACCESS_TOKEN through dg.EnvVar, so the token is
    never part of the config Dagster shows or logs. Where the token goes (`url`, from CVAT_URL), the
    organization (`org`, from CVAT_ORG) and the frames' folder are set by the profile, out of the launchpad's
    reach: run config cannot send the token to another server or upload other files."""

    url: dg.ResourceDependency[str]
    access_token: str
    org: dg.ResourceDependency[str] = ""
    # Local profile: frames are uploaded from these files (annotation.tasks.frame_path) instead of a cloud
    # storage; "": frames come from each model's cloud storage.
    objects_root: dg.ResourceDependency[str] = ""
    poll_period_s: float = 2.0
    request_deadline_s: float = 900.0

    @property
    def backend(self) -> str:
        return "cvat"

    @property
    def local_frames(self) -> bool:
        return bool(self.objects_root)

    def open(self, *, quick: bool = False, logger: logging.Logger | None = None) -> "AnnotationBackend":
        from data_engine.annotation.cvat import CvatBackend

        if not self.url:
            raise dg.Failure("CVAT_URL is not set: set CVAT_URL and CVAT_ACCESS_TOKEN (and CVAT_ORG if needed) where the code location runs")
        retry, timeout = self.client_limits(quick)
        return CvatBackend(
            self.url,
            self.access_token,
            org=self.org or None,
            objects_root=Path(self.objects_root) if self.objects_root else None,
            request_timeout_s=timeout,
            poll_period_s=self.poll_period_s,
            request_deadline_s=self.request_deadline_s,
            late_write_settle_s=self.late_write_settle_s,
            retry=retry,
            logger=logger,
            check_version=not quick,  # the sensor's ticks skip GET /api/server/about; runs log the version
        )


class LabelStudioResource(AnnotationResource):
    """The local profile's Label Studio. Its address and API token come from LABEL_STUDIO_URL and
    LABEL_STUDIO_API_KEY (dg.EnvVar) when set, else from the credentials file `data-engine
    annotation-server` wrote; either way the token is never part of the config Dagster shows or logs."""

    credentials_file: dg.ResourceDependency[str]  # $DATA_ENGINE_HOME/label-studio/credentials.json
    url: str | None = None
    api_key: str | None = None
    objects_root: dg.ResourceDependency[str]  # frames, served by Label Studio as local files
    # Label Studio's LOCAL_FILES_DOCUMENT_ROOT; "": objects_root's parent, as `data-engine annotation-server` sets it.
    document_root: dg.ResourceDependency[str] = ""

    @property
    def backend(self) -> str:
        return "label_studio"

    @property
    def configured(self) -> bool:
        return bool(self.url and self.api_key) or Path(self.credentials_file).is_file()

    def open(self, *, quick: bool = False, logger: logging.Logger | None = None) -> "AnnotationBackend":
        from data_engine.annotation.label_studio import LabelStudioBackend
        from data_engine.annotation.label_studio_server import Credentials

        if self.url and self.api_key:
            url, token = self.url, self.api_key
        else:
            credentials = Credentials.load(Path(self.credentials_file))
            if credentials is None:
                raise dg.Failure(LABEL_STUDIO_NOT_STARTED)
            url, token = credentials.url, credentials.token
        retry, timeout = self.client_limits(quick)
        return LabelStudioBackend(
            url,
            token,
            objects_root=Path(self.objects_root),
            document_root=Path(self.document_root) if self.document_root else None,
            request_timeout_s=timeout,
            late_write_settle_s=self.late_write_settle_s,
            retry=retry,
            logger=logger,
        )

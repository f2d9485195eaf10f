"""What a CVAT COCO 1.0 export zip holds: its annotations file, read as JSON.

Only the CVAT backend downloads such zips; the label merge then checks the COCO it got (labels.coco.check_coco)
like any tool's. A zip that cannot be read (truncated, not a zip, no annotations file, bad JSON) raises
ExportError naming the task and the fix, before anything is merged.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

from data_engine.labels.coco import ExportError

# Where CVAT (Datumaro) puts the annotations in a COCO 1.0 export zip.
ANNOTATIONS_PATH = "annotations/instances_default.json"


def read_export(source: bytes | str | Path, task: int | str) -> Any:
    """The JSON inside a CVAT COCO 1.0 export zip (bytes or a path), not yet checked (check_coco)."""
    where = f"task {task}"
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            try:
                payload = archive.read(ANNOTATIONS_PATH)
            except KeyError:
                names = archive.namelist()[:10]
                raise ExportError(
                    f"{where}: the export has no {ANNOTATIONS_PATH} (it holds {names}); was it exported as COCO 1.0?"
                ) from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as error:
        raise ExportError(f"{where}: the export is not a readable zip ({error}); it may be truncated, export it again") from None
    except (OSError, zlib.error) as error:
        raise ExportError(f"{where}: the export zip is corrupt ({error}); export it again") from None
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{where}: {ANNOTATIONS_PATH} is not valid JSON ({error}); export it again") from None

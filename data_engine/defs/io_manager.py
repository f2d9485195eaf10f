"""Stores Arrow-table asset outputs as Parquet in the object store, one file per partition.

Layout: `assets/<asset key>/<model>/<date>.parquet` for date x model partitions,
`assets/<asset key>/<partition>.parquet` otherwise. Later stages (CVAT, training) read these files.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import dagster as dg

from data_engine.defs.partitions import as_multi_partition_key
from data_engine.defs.resources import ObjectStoreResource

if TYPE_CHECKING:
    import pyarrow as pa

    from data_engine.annotation.reviewed_record import ReviewedTask

REVIEWED_TASKS_IO_MANAGER = "reviewed_tasks_io_manager"


def output_key(asset_key: dg.AssetKey, partition_key: str | dg.MultiPartitionKey | None) -> str:
    base = "assets/" + "/".join(asset_key.path)
    if partition_key is None:
        return f"{base}.parquet"
    if isinstance(partition_key, dg.MultiPartitionKey):
        dims = partition_key.keys_by_dimension
        return f"{base}/{dims['model']}/{dims['date']}.parquet"
    return f"{base}/{partition_key}.parquet"


def _partition_key(context: dg.OutputContext | dg.InputContext) -> str | dg.MultiPartitionKey | None:
    if not context.has_asset_partitions:
        return None
    return as_multi_partition_key(context.asset_partitions_def, context.asset_partition_key)


class ArrowParquetIOManager(dg.ConfigurableIOManager):
    store: ObjectStoreResource

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        import pyarrow.parquet as pq

        key = output_key(context.asset_key, _partition_key(context))
        buffer = io.BytesIO()
        pq.write_table(obj, buffer)
        store = self.store.open()
        store.put(key, buffer.getvalue())
        context.add_output_metadata({"path": store.describe(key), "rows": obj.num_rows})

    def load_input(self, context: dg.InputContext) -> pa.Table:
        import pyarrow.parquet as pq

        key = output_key(context.asset_key, _partition_key(context))
        try:
            data = self.store.open().get(key)
        except KeyError as error:
            raise dg.Failure(
                f"input {context.asset_key.to_user_string()} is not materialized for this partition ({error});"
                " materialize it first"
            ) from None
        return pq.read_table(io.BytesIO(data))


class ReviewedTasksIOManager(dg.ConfigurableIOManager):
    """The record of reviewed tasks (`assets/reviewed_tasks/<model>.parquet`) as a real input of the assets
    downstream of `reviewed_tasks`. The asset writes the record itself, by a conditional write that keeps
    what concurrent runs of the model add (`reviewed_record`), and returns the record it wrote; writing it
    here again would lose a concurrent run's tasks, so `handle_output` stores nothing."""

    store: ObjectStoreResource

    def handle_output(self, context: dg.OutputContext, obj: list[ReviewedTask]) -> None:
        pass  # already stored by the asset's conditional write

    def load_input(self, context: dg.InputContext) -> list[ReviewedTask]:
        from data_engine.annotation.reviewed_record import read_reviewed_tasks

        return read_reviewed_tasks(self.store.open(), output_key(context.asset_key, _partition_key(context)))

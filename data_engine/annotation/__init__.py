"""Stage 3 of the loop: review tasks in an annotation tool, and knowing when they are reviewed.

Plain Python, no Dagster: `backend` is the interface, `cvat` and `label_studio` its implementations
(clients imported only there), `naming` the batch and project names, `tasks` plans a day's tasks (order,
chunks, predictions -> shapes), `rereview` a batch of frames of a label version, `batch_record` each
batch's own record of its frames, `retry` the backoff and deadline helpers, `review_scan` the review
sensor's bounded, cursor-driven scan, `reviewed_record` the per-model record of reviewed tasks that
concurrent runs add to, `reviewed_exports` and `reviewed_merge` the way from reviewed tasks to a label version.
"""

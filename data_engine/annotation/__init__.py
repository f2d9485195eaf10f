"""Stage 3 of the loop: review tasks in an annotation tool, and knowing when they are reviewed.

Plain Python, no Dagster: `backend` is the interface, `cvat` its CVAT implementation (cvat-sdk,
imported only there), `tasks` plans a day's tasks (naming, order, chunks, predictions -> shapes),
`retry` the backoff and deadline helpers, `review_scan` the review sensor's bounded, cursor-driven scan,
`reviewed_record` the per-model record of reviewed tasks that concurrent runs add to.
"""

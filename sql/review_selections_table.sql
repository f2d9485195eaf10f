-- The ledger of frames selected for review: one row per frame per selection run. A day may be
-- re-selected; the latest run of each day counts. Append-only, so a retried run never loses rows.
CREATE TABLE IF NOT EXISTS review_selections (
  model STRING,
  selected_date DATE,
  frame_uri STRING,
  selected_at TIMESTAMP,
  run_id STRING
)

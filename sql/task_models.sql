-- Which model each review task listed by the review sensor belongs to (a CVAT task, a Label Studio
-- review batch), and whether it is reviewed.
-- `listed_tasks` holds the tasks of one sensor tick (task_id, task_name, updated_date, project_id,
-- frame_count, accepted); `task_patterns` one row per model with its
-- task-name pattern (RE2, from the fleet config). A task matching no pattern (another team's task)
-- has a NULL model; one matching several patterns is returned once per model, with models_matched > 1,
-- so the sensor can report it instead of guessing.
-- A task is reviewed when its backend says it is reviewed and accepted (`accepted`: in CVAT every job
-- in stage acceptance with state completed; in Label Studio every frame submitted).
WITH matches AS (
  SELECT
    t.task_id,
    t.task_name,
    t.updated_date,
    t.project_id,
    t.frame_count,
    t.accepted,
    p.model
  FROM listed_tasks AS t
  LEFT JOIN task_patterns AS p
    ON REGEXP_CONTAINS(t.task_name, p.pattern)
)
SELECT
  task_id,
  task_name,
  updated_date,
  project_id,
  frame_count,
  model,
  COUNT(model) OVER (PARTITION BY task_id) AS models_matched,
  COALESCE(accepted, FALSE) AS reviewed
FROM matches
ORDER BY updated_date, task_id, model

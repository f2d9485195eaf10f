-- The selection benchmark's model-day, selected by hand in one DuckDB query: the same candidates and
-- predictions as the selection job computes for `selection_data.fleet_config()` (filters, scopes and
-- budgets written out for that config), without the job's composition, summaries or Dagster. It is the
-- baseline of `selection_job.py`: the least a single query has to do.
WITH
day_predictions AS NOT MATERIALIZED (
  SELECT * FROM predictions WHERE model = 'municipals' AND captured_at >= $day_start AND captured_at < $day_end
),
detections AS NOT MATERIALIZED (
  SELECT frame_uri, client, camera_id, image_width, image_height, class_name, score, x_min, y_min, x_max, y_max
  FROM day_predictions
  WHERE frame_uri IS NOT NULL AND client IS NOT NULL AND camera_id IS NOT NULL AND image_width IS NOT NULL
    AND image_height IS NOT NULL AND class_name IS NOT NULL AND score IS NOT NULL AND x_min IS NOT NULL
    AND y_min IS NOT NULL AND x_max IS NOT NULL AND y_max IS NOT NULL
    AND NOT (isnan(score) OR isnan(x_min) OR isnan(y_min) OR isnan(x_max) OR isnan(y_max))
    AND score >= 0 AND score <= 1
    AND image_width BETWEEN 1 AND 100000 AND image_height BETWEEN 1 AND 100000
    AND x_min < x_max AND y_min < y_max AND x_min >= 0 AND y_min >= 0 AND x_max <= image_width AND y_max <= image_height
    AND class_name IN ('PET', 'Other PET', 'HDPE', 'Cardboard', 'Film', 'Metal Can')
    AND camera_id IN ('cam-01', 'cam-02', 'cam-11', 'cam-12', 'cam-13', 'cam-21', 'cam-22', 'cam-23')
),
day_frames AS (
  -- One row per frame (streaming inserts can repeat one), valid fields only.
  SELECT frame_uri, client, camera_id, model_version, captured_at, image_width, image_height
  FROM frames
  WHERE model = 'municipals' AND captured_at >= $day_start AND captured_at < $day_end
    AND frame_uri IS NOT NULL AND client IS NOT NULL AND camera_id IS NOT NULL
    AND image_width BETWEEN 1 AND 100000 AND image_height BETWEEN 1 AND 100000
    AND camera_id IN ('cam-01', 'cam-02', 'cam-11', 'cam-12', 'cam-13', 'cam-21', 'cam-22', 'cam-23')
  QUALIFY row_number() OVER (
    PARTITION BY frame_uri ORDER BY captured_at, camera_id, client, model_version, image_width, image_height
  ) = 1
),
box_overlaps AS NOT MATERIALIZED (
  SELECT a.frame_uri, a.client, a.class_name AS a_class, b.class_name AS b_class,
    (least(a.x_max, b.x_max) - greatest(a.x_min, b.x_min)) * (least(a.y_max, b.y_max) - greatest(a.y_min, b.y_min)) AS inter,
    (a.x_max - a.x_min) * (a.y_max - a.y_min) + (b.x_max - b.x_min) * (b.y_max - b.y_min) AS area_sum
  FROM detections AS a
  JOIN detections AS b ON a.frame_uri = b.frame_uri AND a.class_name < b.class_name
  WHERE a.x_min < b.x_max AND b.x_min < a.x_max AND a.y_min < b.y_max AND b.y_min < a.y_max
),
flagged AS (
  SELECT DISTINCT frame_uri, 0 AS filter_rank FROM detections
  WHERE class_name = 'Other PET'
    AND (x_max - x_min) * (y_max - y_min) >= 0.05 * image_width * image_height
    AND (x_max - x_min) * (y_max - y_min) <= 1.0 * image_width * image_height
  UNION ALL
  SELECT DISTINCT frame_uri, 1 FROM box_overlaps
  WHERE ((a_class = 'Other PET' AND b_class = 'PET') OR (a_class = 'Cardboard' AND b_class = 'Film'))
    AND inter >= 0.5 * (area_sum - inter)
  UNION ALL
  SELECT DISTINCT frame_uri, 2 FROM box_overlaps WHERE client = 'north_depot' AND inter >= 0.4 * (area_sum - inter)
  UNION ALL
  SELECT DISTINCT frame_uri, 3 FROM detections WHERE score >= 0.35 AND score <= 0.45
  UNION ALL
  SELECT DISTINCT frame_uri, 4 FROM detections
  WHERE class_name IN ('Film', 'HDPE') AND client = 'city_mrf' AND camera_id IN ('cam-11', 'cam-12')
    AND score >= 0.25 AND score <= 0.3
  UNION ALL
  SELECT DISTINCT frame_uri, 5 FROM detections
  WHERE class_name = 'Cardboard' AND camera_id IN ('cam-01', 'cam-21')
    AND (x_max - x_min) * (y_max - y_min) >= 0.1 * image_width * image_height
    AND (x_max - x_min) * (y_max - y_min) <= 0.5 * image_width * image_height
  UNION ALL
  SELECT f.frame_uri, 6 FROM day_frames AS f
  WHERE f.client IN ('acme_recycling', 'city_mrf')
    AND NOT EXISTS (SELECT 1 FROM day_predictions AS p WHERE p.frame_uri = f.frame_uri)
),
previously_selected AS (
  SELECT DISTINCT s.frame_uri
  FROM review_selections AS s
  JOIN (
    SELECT selected_date, max(selected_at) AS selected_at FROM review_selections
    WHERE model = 'municipals' AND selected_date < $day GROUP BY selected_date
  ) AS latest USING (selected_date, selected_at)
  WHERE s.model = 'municipals'
),
candidates AS (
  SELECT frame_uri, bit_or(1::BIGINT << filter_rank) AS filter_mask, min(filter_rank) AS best_rank,
    count(*) AS reason_count, md5(frame_uri) AS tiebreak
  FROM flagged
  WHERE frame_uri NOT IN (SELECT frame_uri FROM previously_selected)
  GROUP BY frame_uri
),
budgets(filter_rank, budget) AS (VALUES (2, 200), (3, 300), (6, 50)),
within_budget AS (
  SELECT DISTINCT frame_uri FROM (
    SELECT c.frame_uri, b.budget, row_number() OVER (PARTITION BY b.filter_rank ORDER BY c.tiebreak) AS r
    FROM candidates AS c JOIN budgets AS b ON c.filter_mask & (1::BIGINT << b.filter_rank) != 0
  ) WHERE r <= budget
),
camera_ranked AS (
  SELECT c.*, f.client, f.camera_id, f.model_version, f.captured_at, f.image_width, f.image_height,
    row_number() OVER (PARTITION BY f.camera_id ORDER BY c.best_rank, c.reason_count DESC, c.tiebreak) AS rank_in_camera
  FROM candidates AS c
  JOIN day_frames AS f USING (frame_uri)
  -- Filters 0, 1, 4 and 5 have no budget (bits 1 + 2 + 16 + 32).
  WHERE c.filter_mask & 51 != 0 OR c.frame_uri IN (SELECT frame_uri FROM within_budget)
),
selected AS (
  SELECT * FROM camera_ranked WHERE rank_in_camera <= 100
  QUALIFY row_number() OVER (ORDER BY best_rank, reason_count DESC, tiebreak) <= 500
),
boxes AS (
  SELECT DISTINCT d.frame_uri, d.class_name, d.score, d.x_min, d.y_min, d.x_max, d.y_max
  FROM detections AS d SEMI JOIN selected AS s ON s.frame_uri = d.frame_uri
)
SELECT
  s.frame_uri, s.client, s.camera_id, s.model_version, s.captured_at, s.image_width, s.image_height, s.filter_mask,
  list({'class_name': b.class_name, 'score': b.score, 'x_min': b.x_min, 'y_min': b.y_min, 'x_max': b.x_max,
        'y_max': b.y_max} ORDER BY b.class_name, b.score, b.x_min, b.y_min, b.x_max, b.y_max)
    FILTER (WHERE b.frame_uri IS NOT NULL) AS predictions
FROM selected AS s
LEFT JOIN boxes AS b ON b.frame_uri = s.frame_uri
GROUP BY ALL
ORDER BY any_value(s.best_rank), any_value(s.reason_count) DESC, any_value(s.tiebreak)

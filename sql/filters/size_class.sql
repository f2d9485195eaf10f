-- size_class: a detection of one of @classes whose box covers between @min_area_fraction and
-- @max_area_fraction of the image (small "Other PET" are often PET, big ones are often bags).
SELECT DISTINCT frame_uri
FROM detections
WHERE class_name IN UNNEST(@classes)
  AND (x_max - x_min) * (y_max - y_min) >= @min_area_fraction * image_width * image_height
  AND (x_max - x_min) * (y_max - y_min) <= @max_area_fraction * image_width * image_height

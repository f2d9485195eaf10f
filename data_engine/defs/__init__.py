"""The Dagster layer: assets, jobs, schedules and resources that wire the domain packages together."""

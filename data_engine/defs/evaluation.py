"""Stage 6 of the loop, evaluation and promotion: `evaluation_report` scores the selected checkpoint and
the production model on the same frozen test split (one evaluate invocation of the trainer, through the
profile's launcher), its gates are blocking asset checks, `promoted_model` moves the production pointer
when every gate passed, `rollback_model_job` moves it back, and `auto_training_sensor` starts training
when enough new reviewed images arrived. Evaluation and promotion follow a new checkpoint by themselves
(AutomationCondition.eager, evaluated by `evaluation_automation_sensor`).

Thin: scoring, gates and the pointer come from `data_engine.evaluation`.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import base64
import json
from typing import Any

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.metadata import markdown_table
from data_engine.defs.partitions import model_partitions
from data_engine.defs.resources import LabelStoreResource, ModelStoreResource
from data_engine.defs.trainer_launcher import TrainerLauncherResource
from data_engine.defs.training import TRAINING_JOB, training_tags
from data_engine.evaluation.gates import GATES
from data_engine.settings import Settings

GROUP = "evaluation"
ROLLBACK_JOB = "rollback_model_job"
GATE_DESCRIPTIONS = {
    "overall_ap": "AP@[.50:.95] not below production's minus gates.ap_tolerance, and the paired bootstrap's 95% CI lower"
    " bound above -ap_tolerance (without production: gates.min_ap and gates.min_ap50).",
    "per_class": "No class with at least gates.class_min_support test boxes loses more than gates.class_max_drop AP.",
    "per_slice": "No client or camera with at least evaluation.slice_min_support test boxes loses more than gates.slice_max_drop.",
    "robustness": "Under each perturbation, the candidate's AP drop is at most production's plus gates.robustness_max_extra_drop.",
    "mltest": "The external test suite (evaluation.mltest) passes, when one is configured.",
}


class PromotionRunConfig(dg.Config):
    """Launchpad config of promoted_model. Promotion despite failed gates is an explicit, recorded action."""

    override_reason: str | None = None  # promote even though gates failed; recorded in production.json


class RollbackConfig(dg.Config):
    """Launchpad config of rollback_model_job."""

    model: str
    to_candidate: str  # a candidate id that was production before (`data-engine models production --model M`)
    reason: str


def _moved_by(context) -> str:
    user = context.run.tags.get("dagster/user")
    return f"user {user}" if user else f"dagster run {context.run.run_id}"


def _latest_metadata(context, asset_key: dg.AssetKey, model: str) -> dict[str, Any]:
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[model]), limit=1).records
    if not records:
        raise dg.Failure(f"{asset_key.to_user_string()} has no materialization for model {model!r}; materialize it first")
    return {name: value.value for name, value in records[0].asset_materialization.metadata.items()}


def _png_markdown(title: str, png: bytes) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _gate_check_results(model: str, report: dict[str, Any], gate_results: list) -> list[dg.AssetCheckResult]:
    results = []
    for result in gate_results:
        rows = [{"number": f.what, "value": round(f.value, 4), "limit": round(f.limit, 4), "off by": round(f.by, 4), "look at": f.look_at} for f in result.failures]
        results.append(
            dg.AssetCheckResult(
                check_name=result.name,
                passed=result.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=result.describe(),
                metadata={
                    "candidate": report["candidate"]["candidate_id"],
                    "summary": result.summary or "failed",
                    **({"failures": markdown_table(rows)} if rows else {}),
                },
            )
        )
    return results


def build_evaluation_defs(config: FleetConfig, settings: Settings) -> dg.Definitions:
    fleet = config
    partitions = model_partitions(fleet)
    follows = dg.AutomationCondition.eager()

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"json"},
        deps=[dg.AssetKey("selected_checkpoint")],
        check_specs=[dg.AssetCheckSpec(name, asset="evaluation_report", description=GATE_DESCRIPTIONS[name], blocking=True) for name in GATES],
        automation_condition=follows,
    )
    def evaluation_report(
        context: dg.AssetExecutionContext, trainer: TrainerLauncherResource, label_stores: LabelStoreResource, model_stores: ModelStoreResource
    ) -> dg.MaterializeResult:
        """The selected checkpoint and the current production model scored on the candidate's label version's
        test split (the run's splits.json), in one evaluate invocation of the trainer: COCO metrics, per-class
        AP and operating point, per-client and per-camera slices, robustness under perturbations, the paired
        bootstrap of ΔAP and prediction churn; written to `<root>/<model>/evaluations/<candidate_id>/report.json`.
        Its gates are blocking checks: a candidate that fails one does not reach promoted_model in the run."""
        from data_engine.evaluation.charts import per_class_bar_png, pr_curve_png
        from data_engine.evaluation.evaluate import INDEX, evaluate, evaluation_extras, read_detections, run_external_test
        from data_engine.evaluation.gates import evaluate_gates
        from data_engine.evaluation.promotion import ProductionPointer
        from data_engine.evaluation.report import EvaluationError, ground_truth_of_test_split, per_class_table, per_slice_table, robustness_table, summary_table
        from data_engine.labels import LabelStoreError
        from data_engine.training import ModelStoreError

        model = context.partition_key
        model_config = fleet.models[model]
        store = model_stores.open(model)
        candidate_id = _latest_metadata(context, dg.AssetKey("selected_checkpoint"), model)["candidate_id"]
        try:
            record = store.candidate(model, candidate_id)
            if record is None:
                raise dg.Failure(f"candidate {candidate_id} of model {model!r} has no record at {store.describe_candidate(model, candidate_id)}")
            splits = json.loads(store.objects.get(f"{model}/runs/{record['run_id']}/splits.json"))
            version = record["label_version"]
            ground_truth = ground_truth_of_test_split(label_stores.open(model).label_set(model, version), splits)
        except (LabelStoreError, ModelStoreError, EvaluationError, KeyError) as error:
            raise dg.Failure(description=str(error)) from error
        candidate = {"candidate_id": candidate_id, "checkpoint_uri": record["checkpoint"]["uri"], "label_version": version}
        current = ProductionPointer(store.objects).current(model)
        production = (
            {"candidate_id": current.record["candidate"], "checkpoint_uri": current.record["checkpoint_uri"], "label_version": current.record["label_version"]}
            if current
            else None
        )
        # One folder per (candidate, production) pair: a retry reuses finished detections, and a
        # re-evaluation against a new production model never reads the old one's.
        folder = f"{model}/evaluations/{candidate_id}/detections-vs-{production['candidate_id'] if production else 'none'}"
        checkpoint_uris = [candidate["checkpoint_uri"]] + ([production["checkpoint_uri"]] if production else [])
        documents = read_detections(store.objects, folder)
        if documents is None:
            extras = evaluation_extras(checkpoint_uris, ground_truth, store.objects.describe(folder), model_config.evaluation.perturbations)
            request_id = f"{model}-evaluate-{candidate_id}-vs-{production['candidate_id'] if production else 'none'}"
            trainer.run(context, model=model, request_id=request_id, entrypoint="evaluate", extras=extras)
            documents = read_detections(store.objects, folder)
            if documents is None:
                raise dg.Failure(f"the trainer's evaluate entrypoint finished without writing {store.objects.describe(folder)}/{INDEX}")
        else:
            context.log.info(f"reusing the detections in {store.objects.describe(folder)}")
        mltest_config = model_config.evaluation.mltest
        mltest = run_external_test(mltest_config, candidate["checkpoint_uri"], ground_truth) if mltest_config else None
        try:
            report = evaluate(
                model=model, model_config=model_config, candidate=candidate, production=production,
                label_version=version, ground_truth=ground_truth, documents=documents, mltest=mltest,
            )
        except (EvaluationError, KeyError) as error:
            raise dg.Failure(description=str(error)) from error
        base = f"{model}/evaluations/{candidate_id}"
        store.objects.put(f"{base}/report.json", json.dumps(report, indent=1).encode())
        charts = {"pr_curve": pr_curve_png(report), "per_class_ap": per_class_bar_png(report)}
        for name, png in charts.items():
            store.objects.put(f"{base}/{name}.png", png)
        gate_results = evaluate_gates(report, model_config.gates, mltest_configured=mltest is not None)
        scores = report["scores"]["candidate"]
        comparison = report["comparison"]
        metadata: dict[str, Any] = {
            "candidate_id": candidate_id,
            "production": production["candidate_id"] if production else "none yet",
            "label_version": version,
            "test_images": scores["images"],
            "test_boxes": scores["boxes"],
            "ap": scores["ap"],
            "ap50": scores["ap50"],
            "report": dg.MetadataValue.path(store.objects.describe(f"{base}/report.json")),
            "summary": dg.MetadataValue.md(summary_table(report)),
            "per_class": dg.MetadataValue.md(per_class_table(report)),
            "per_slice": dg.MetadataValue.md(per_slice_table(report)),
            "robustness": dg.MetadataValue.md(robustness_table(report)),
            "pr_curve": _png_markdown("PR curves at IoU 0.5", charts["pr_curve"]),
            "per_class_ap_chart": _png_markdown("AP per class", charts["per_class_ap"]),
            "gates_failed": [result.name for result in gate_results if not result.passed],
        }
        if comparison:
            metadata |= {
                "delta_ap_mean": comparison["bootstrap"]["mean"],
                "delta_ap_ci95": comparison["bootstrap"]["ci95"],
                "churn": comparison["churn"]["fraction"],
            }
        if mltest is not None:
            metadata["mltest"] = dg.MetadataValue.json(mltest)
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=_gate_check_results(model, report, gate_results),
            data_version=dg.DataVersion(f"{candidate_id}|{production['candidate_id'] if production else 'none'}"),
        )

    # A candidate whose gates failed stays out of production without a doomed promotion run: the run that
    # evaluated it skipped promoted_model, and automation does not ask again while its gates stand failed
    # (unless evaluation_report is requested on the same tick: that run's own checks decide).
    gate_failed = dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
    promote_when = follows & ~dg.AutomationCondition.any_deps_match(gate_failed & ~dg.AutomationCondition.will_be_requested())

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"json"}, deps=[evaluation_report], automation_condition=promote_when)
    def promoted_model(context: dg.AssetExecutionContext, config: PromotionRunConfig, model_stores: ModelStoreResource) -> dg.MaterializeResult:
        """The evaluated candidate as the model's production model: `<root>/<model>/production.json` moved by
        a conditional write, the earlier record kept in `production-history/`. Only when every gate of its
        evaluation passed, or with `override_reason` (recorded, naming the failed gates); also sets the SSM
        parameter `promotion.ssm_parameter` to the record when one is configured. Refused when
        production changed since the evaluation: re-run evaluation_report against the new one."""
        from data_engine.evaluation.gates import evaluate_gates
        from data_engine.evaluation.promotion import ProductionMoved, ProductionPointer, PromotionRefused

        model = context.partition_key
        model_config = fleet.models[model]
        store = model_stores.open(model)
        candidate_id = _latest_metadata(context, evaluation_report.key, model)["candidate_id"]
        try:
            report = json.loads(store.objects.get(f"{model}/evaluations/{candidate_id}/report.json"))
        except KeyError as error:
            raise dg.Failure(description=f"{error}; materialize evaluation_report first") from None
        gate_results = evaluate_gates(report, model_config.gates, mltest_configured=model_config.evaluation.mltest is not None)
        pointer = ProductionPointer(store.objects, model_config.promotion.ssm_parameter)
        try:
            record = pointer.promote(model, report, gate_results, moved_by=_moved_by(context), override_reason=config.override_reason)
        except (PromotionRefused, ProductionMoved) as error:
            raise dg.Failure(description=str(error)) from error
        return _pointer_result(pointer, model, record)

    @dg.op(description="Point a model's production back at a model that was production before, with a reason.")
    def rollback_model(context: dg.OpExecutionContext, config: RollbackConfig, model_stores: ModelStoreResource) -> None:
        from data_engine.evaluation.promotion import ProductionMoved, ProductionPointer, PromotionRefused

        if config.model not in fleet.models:
            raise dg.Failure(f"model {config.model!r} is not in the fleet config (models: {', '.join(fleet.models)})")
        pointer = ProductionPointer(model_stores.open(config.model).objects, fleet.models[config.model].promotion.ssm_parameter)
        try:
            record = pointer.rollback(config.model, config.to_candidate, reason=config.reason, moved_by=_moved_by(context))
        except (PromotionRefused, ProductionMoved) as error:
            raise dg.Failure(description=str(error)) from error
        result = _pointer_result(pointer, config.model, record)
        context.log_event(dg.AssetMaterialization(asset_key=promoted_model.key, partition=config.model, metadata=result.metadata))

    @dg.job(name=ROLLBACK_JOB, description="Move a model's production pointer back to a named earlier model (launchpad: model, to_candidate, reason).")
    def rollback_model_job():
        rollback_model()

    # On by default where the profile can train: locally (a subprocess), or in prod once a model has a Batch queue.
    can_run = settings.profile == "local" or any(model.training.batch for model in fleet.models.values())
    status = dg.DefaultSensorStatus.RUNNING if can_run else dg.DefaultSensorStatus.STOPPED

    @dg.sensor(
        name="auto_training_sensor",
        job_name=TRAINING_JOB,
        minimum_interval_seconds=60,  # a look at label manifests: cheap, and a new label version trains within a minute
        default_status=status,
        description="Train a model when its latest label version has training.auto.min_new_reviewed_images more"
        " images than the version it last trained on (or was last asked to train on); training.auto.paused stops it.",
    )
    def auto_training_sensor(context: dg.SensorEvaluationContext, label_stores: LabelStoreResource):
        from data_engine.training.automatic import training_due

        requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        requests, skipped = [], []
        for model, model_config in fleet.models.items():
            auto = model_config.training.auto
            if auto.paused:
                skipped.append(f"{model}: paused (training.auto.paused)")
                continue
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("trained_model"), asset_partitions=[model]), limit=1
            ).records
            trained = records[0].asset_materialization.metadata["label_version"].value if records else None
            due, why = training_due(label_stores.open(model), model, [trained, requested.get(model)], auto.min_new_reviewed_images)
            if not due:
                skipped.append(f"{model}: {why}")
                continue
            latest = label_stores.open(model).latest(model).version
            requested[model] = latest
            context.log.info(f"{model}: {why}")
            requests.append(dg.RunRequest(run_key=f"{model}:{latest}", partition_key=model, tags=training_tags(model)))
        if not requests:
            return dg.SkipReason("; ".join(skipped) or "no model")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(requested, sort_keys=True))

    automation = dg.AutomationConditionSensorDefinition(
        "evaluation_automation_sensor",
        target=dg.AssetSelection.assets(evaluation_report, promoted_model),
        default_status=status,
        description="Evaluates and promotes a new selected checkpoint without a click (their eager automation conditions).",
    )
    return dg.Definitions(assets=[evaluation_report, promoted_model], jobs=[rollback_model_job], sensors=[auto_training_sensor, automation])


def _pointer_result(pointer, model: str, record: dict[str, Any]) -> dg.MaterializeResult:
    history = [
        {"#": entry["sequence"], "candidate": entry["candidate"], "action": entry["action"], "moved_by": entry["moved_by"], "moved_at": entry["moved_at"], "reason": entry["reason"]}
        for entry in reversed(pointer.history(model))
    ]
    return dg.MaterializeResult(
        metadata={
            "candidate": record["candidate"],
            "checkpoint_uri": record["checkpoint_uri"],
            "label_version": record["label_version"],
            "previous": record["previous"] or "none",
            "action": record["action"],
            "reason": record["reason"],
            "moved_by": record["moved_by"],
            "pointer": dg.MetadataValue.path(pointer.describe(model)),
            "history": markdown_table(history),
        },
        data_version=dg.DataVersion(f"{record['sequence']}:{record['candidate']}"),
    )

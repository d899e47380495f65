"""The model registry in the Django admin: read-only, with an "Activate" action and a calibration
plot on each version's page. Activation goes through the registry service (file check, audit row).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from .admin import ReadOnlyAdmin
from .model_registry import ModelFileError, model_version_activate
from .models import ModelVersion

_SPLITS = ("train", "validation", "test")


def _figure(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"


def _auc_text(figures: dict[str, Any]) -> str:
    ci = figures.get("auc_ci95")
    if "auc" not in figures:
        return "—"
    if isinstance(ci, list) and len(ci) == 2:
        return f"{_figure(figures['auc'])} ({_figure(ci[0])}-{_figure(ci[1])})"
    return _figure(figures["auc"])


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "kind", "architecture", "test_auc", "test_brier", "active", "trained_at")
    list_filter = ("name", "kind", "active")
    search_fields = ("=name", "=version", "=external_id")
    ordering = ("name", "-trained_at")
    actions = ("activate",)
    exclude = ("features", "metrics", "calibration")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        names = [n for n in super().get_readonly_fields(request, obj) if n not in self.exclude]
        return [*names, "metrics_summary", "features_table", "metrics_json"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The list-level permission gates the Activate action; a version's page is read-only.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    @admin.display(description="test AUC (95% CI)")
    def test_auc(self, obj: ModelVersion) -> str:
        return _auc_text(obj.split_metrics("test"))

    @admin.display(description="test Brier")
    def test_brier(self, obj: ModelVersion) -> str:
        return _figure(obj.split_metrics("test").get("brier"))

    @admin.display(description="metrics")
    def metrics_summary(self, obj: ModelVersion) -> str:
        if isinstance(obj.metrics, dict) and isinstance(obj.metrics.get("flags"), dict):
            return _flag_table(obj.metrics)
        rows = []
        for split in _SPLITS:
            m = obj.split_metrics(split)
            if m:
                rows.append((split, m.get("n", "—"), _figure(m.get("prevalence"), 2), _auc_text(m),
                             _figure(m.get("brier")), _figure(m.get("calibration_slope"), 2),
                             _figure(m.get("calibration_intercept"), 2)))
        if not rows:
            return "—"
        header = format_html_join("", "<th>{}</th>", ((h,) for h in (
            "split", "n", "prevalence", "AUC (95% CI)", "Brier", "calibration slope", "calibration intercept")))
        body = format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in r)),)
                                                    for r in rows))
        return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)

    @admin.display(description="features")
    def features_table(self, obj: ModelVersion) -> str:
        features = obj.features if isinstance(obj.features, list) else []
        if not features:
            return "—"
        rows = ((f.get("column", f.get("name", "")), f.get("unit", ""), _figure(f.get("mean")),
                 _figure(f.get("scale"))) for f in features if isinstance(f, dict))
        return format_html(
            "<table><thead><tr><th>column</th><th>unit</th><th>training mean</th><th>scale</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="all metrics (JSON)")
    def metrics_json(self, obj: ModelVersion) -> str:
        return format_html('<pre style="max-height: 30em; overflow: auto">{}</pre>',
                           json.dumps(obj.metrics, indent=2, sort_keys=True))

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Any = None) -> HttpResponse:
        context["calibration_plot"] = calibration_plot_data(obj) if obj is not None else None
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.action(description="Activate (make it the version predictions use)", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        chosen = list(queryset)
        names = [mv.name for mv in chosen]
        if len(set(names)) != len(names):
            self.message_user(request, "Select at most one version per model name: only one can be active.",
                              messages.ERROR)
            return
        for mv in chosen:
            try:
                model_version_activate(mv, user=request.user)
            except ModelFileError as exc:
                self.message_user(request, f"{mv.name} {mv.version} was not activated: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{mv.name} {mv.version} is now active.", messages.SUCCESS)


def _flag_table(metrics: dict[str, Any]) -> str:
    """Per-flag figures of a classifier of flags (the NLP assertion heads): the head chosen, and
    precision / recall / F1 of the rules alone and of rules + classifier."""
    def prf(figures: Any) -> str:
        if not isinstance(figures, dict):
            return "—"
        return " / ".join(_figure(figures.get(k)) for k in ("precision", "recall", "f1"))

    rows = [(flag, spec.get("positives", "—"), spec.get("head", "—"), prf(spec.get("rules")), prf(spec.get("combined")))
            for flag, spec in metrics["flags"].items() if isinstance(spec, dict)]
    header = format_html_join("", "<th>{}</th>", ((h,) for h in (
        "flag", "positives", "head", "rules P / R / F1", "rules + classifier P / R / F1")))
    body = format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in r)),)
                                                for r in rows))
    return format_html("<p>{}</p><table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
                       metrics.get("evaluation", ""), header, body)


def calibration_plot_data(mv: ModelVersion) -> dict[str, Any] | None:
    """The binned points per split in the shape the change page's script draws, or None."""
    bins = mv.calibration.get("bins") if isinstance(mv.calibration, dict) else None
    if not isinstance(bins, dict):
        return None
    traces = []
    for split in ("validation", "test"):
        points = bins.get(split)
        if not isinstance(points, list) or not points:
            continue
        traces.append({
            "split": split,
            "predicted": [p["predicted"] for p in points],
            "observed": [p["observed"] for p in points],
            "low": [p.get("observed_low", p["observed"]) for p in points],
            "high": [p.get("observed_high", p["observed"]) for p in points],
            "n": [p.get("n") for p in points],
        })
    if not traces:
        return None
    return {"title": f"{mv.name} {mv.version} ({mv.architecture})", "traces": traces,
            "method": mv.calibration.get("method", "")}

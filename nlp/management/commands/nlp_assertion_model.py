"""python manage.py nlp_assertion_model status | register [JSON] [--no-activate] | activate VERSION

The assertion classifier in the model registry (``nlp.assertion_registry``, name ``nlp_assertion``):

- ``status``: every registered version (its head, figures, file and which is active) and the head
  extraction uses now;
- ``register``: copies an artefact (default: the committed ``nlp/assertion/artefact/assertion-head.json``
  and its npz) under CDSS_MODEL_DIR and registers it, active unless ``--no-activate``; a json that is
  registered already is left as it is (says so, exit 0);
- ``activate VERSION``: makes that version the one extraction uses (its files checked first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "The assertion classifier in the model registry: status, register an artefact, activate a version."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="registered versions and the head extraction uses now")
        register = sub.add_parser("register", help="register an artefact (default: the committed one)")
        register.add_argument("head_json", nargs="?", type=Path, default=None,
                              help="the artefact's .json (its .npz beside it)")
        register.add_argument("--no-activate", action="store_true", help="register without making it active")
        activate = sub.add_parser("activate", help="make a registered version the active one")
        activate.add_argument("version")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['action']}")(options)

    def do_status(self, options: dict[str, Any]) -> None:
        from cdss.model_registry import ModelFileError
        from cdss.models import ModelVersion
        from nlp.assertion_registry import MODEL_NAME, assertion_head_current

        versions = list(ModelVersion.objects.filter(name=MODEL_NAME).order_by("registered_at"))
        if not versions:
            self.stdout.write(f"no version of {MODEL_NAME} is registered")
        for mv in versions:
            figures = ", ".join(
                f"{flag} F1 {spec['combined']['f1']:.3f}" for flag, spec in mv.metrics.get("flags", {}).items()
                if isinstance(spec.get("combined"), dict)
            )
            self.stdout.write(f"{mv.version}{' (active)' if mv.active else ''}: {mv.file_path} "
                              f"sha256 {mv.file_sha256[:12]}...; {figures or 'no cross-validated figures'}")
        try:
            head = assertion_head_current()
        except ModelFileError as exc:
            raise CommandError(str(exc)) from exc
        where = f"registry version {head.registry_version}" if head.source == "registry" else "shipped artefact"
        self.stdout.write(f"extraction uses: {head.version} ({where}, {head.head_json})")

    def do_register(self, options: dict[str, Any]) -> None:
        from cdss.model_registry import ModelFileError
        from nlp.assertion.model import HEAD_JSON, AssertionModelError
        from nlp.assertion_registry import assertion_artefact_register

        path: Path = options["head_json"] or HEAD_JSON
        if path.suffix != ".json":
            raise CommandError("name the artefact's .json (its .npz beside it)")
        shipped = path.resolve() == HEAD_JSON.resolve()
        try:
            done = assertion_artefact_register(
                path, activate=not options["no_activate"],
                notes="The committed artefact nlp/assertion/artefact/assertion-head.json (registered, not "
                      "trained, at this date)." if shipped else f"Registered from {path}.",
            )
        except (AssertionModelError, ModelFileError, ValueError) as exc:
            raise CommandError(f"{path}: not registered: {exc}") from exc
        line = done.describe(str(path))
        self.stdout.write(self.style.SUCCESS(line) if done.created else line)

    def do_activate(self, options: dict[str, Any]) -> None:
        from cdss.model_registry import ModelFileError, model_version_activate
        from cdss.models import ModelVersion
        from nlp.assertion_registry import MODEL_NAME

        mv = ModelVersion.objects.filter(name=MODEL_NAME, version=options["version"]).first()
        if mv is None:
            raise CommandError(f"no version {options['version']!r} of {MODEL_NAME} (see nlp_assertion_model status)")
        try:
            model_version_activate(mv)
        except ModelFileError as exc:
            raise CommandError(f"{mv.name} {mv.version} was not activated: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"{mv.name} {mv.version} is now active"))

"""python manage.py dicom_listener [--port 11112] [--ae-title CDSS] [--site CODE] [--allow AE,AE]"""

from __future__ import annotations

import contextlib
import signal
import ssl
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.listener import DicomListener, listener_tls_context
from imaging.pacs import valid_ae_title
from patients.management.sites import site_option


def _ae_title(value: str, what: str) -> str:
    if not valid_ae_title(value):
        raise CommandError(f"{what} must be 1-16 characters without a backslash: {value!r}.")
    return value.strip()


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = ("Receive images by DICOM C-STORE (a Storage SCP): each is stored for the patient of the site whose MRN "
            "is its PatientID, with the upload's checks, and analysed (or held until the record has that patient); "
            "C-ECHO answers. Runs until stopped.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
        parser.add_argument("--host", default="127.0.0.1",
                            help="Address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every "
                                 "interface, where modalities and the PACS send from the network)")
        parser.add_argument("--ae-title", default="CDSS", help="This system's AE title, which callers must call")
        parser.add_argument("--site", help="Site code of the patients (default: CDSS_DEFAULT_SITE_CODE)")
        parser.add_argument("--allow", default="", help="Comma-separated AE titles allowed to send (default: any)")
        parser.add_argument("--max-associations", type=int, default=10)
        parser.add_argument("--refuse-unmatched", action="store_true",
                            help="Refuse (0xC000) an image whose PatientID is no MRN of the site, instead of holding "
                                 "it until the record has that patient (CDSS_IMAGING_HOLD_DAYS)")
        parser.add_argument("--tls-cert", default="", help="DICOM over TLS: this listener's certificate (PEM)")
        parser.add_argument("--tls-key", default="", help="its private key (PEM), unless in the certificate's file")
        parser.add_argument("--tls-client-ca", default="",
                            help="only senders with a certificate signed by these CAs (PEM) may connect")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError("The port must be between 1 and 65535.")
        ae_title = _ae_title(options["ae_title"], "The AE title")
        allowed = [_ae_title(a.strip(), "An allowed AE title") for a in options["allow"].split(",") if a.strip()]
        tls = None
        if options["tls_cert"]:
            try:
                tls = listener_tls_context(options["tls_cert"], options["tls_key"], options["tls_client_ca"])
            except (OSError, ssl.SSLError) as exc:
                raise CommandError(f"The TLS certificate, key or client CAs could not be loaded ({type(exc).__name__}).") from None
        elif options["tls_key"] or options["tls_client_ca"]:
            raise CommandError("--tls-key and --tls-client-ca need --tls-cert.")
        site = site_option(options["site"])
        listener = DicomListener(site=site, ae_title=ae_title, allowed_callers=allowed, host=options["host"],
                                 port=options["port"], max_associations=options["max_associations"], tls=tls,
                                 hold_unmatched=not options["refuse_unmatched"])
        def ready() -> None:
            self.stdout.write(f"Listening as {ae_title} on {options['host']}:{options['port']}{' (TLS)' if tls else ''}"
                              f" for site {site.code}"
                              f" ({'callers ' + ', '.join(allowed) if allowed else 'any caller'}).")
            self.stdout.flush()

        signal.signal(signal.SIGTERM, _stop)  # a service manager's stop: as Ctrl+C, with the summary
        with contextlib.suppress(KeyboardInterrupt):
            listener.serve_until_interrupted(ready)
        counts = listener.counts
        self.stdout.write(f"Stopped: {counts.associations} association(s), {counts.stored} image(s) stored, "
                          f"{counts.already_stored} already stored, {counts.held} held for a patient not in the record yet, "
                          f"{counts.refused} refused, {counts.jobs} job(s).")

"""DICOM over TLS (PS3.15 B.9): the listener with its certificate (and, when asked, senders' client
certificates), and the results sent to a PACS that speaks TLS only. Certificates are made here: a CA,
a certificate for 127.0.0.1 and one for a sender."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import connection, transaction
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cdss.jobs.runner import job_run
from imaging.listener import DicomListener, listener_tls_context
from imaging.models import ImagingInstance, ResultDelivery
from imaging.pacs import pacs_send_enqueue
from patients import models as m
from tests.imaging.test_listener import dataset
from tests.imaging.test_pacs import start_scp
from tests.imaging.test_pages import upload
from tests.imaging.test_results_dicom import real_finding
from tests.integration.workers import free_port


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return path.with_suffix(".crt"), path.with_suffix(".key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Test hospital CA")).issuer_name(_name("Test hospital CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    ca_path, _ = _write(folder / "ca", ca_key, ca)

    def issue(common: str, stem: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return _write(folder / stem, key, builder.sign(ca_key, hashes.SHA256()))

    server_cert, server_key = issue("127.0.0.1", "server", server=True)
    client_cert, client_key = issue("MODALITY", "client", server=False)
    return Pki(ca_path, server_cert, server_key, client_cert, client_key)


def client_context(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def associates(port: int, tls: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.network_timeout = ae.acse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="CDSS", tls_args=(tls, "127.0.0.1") if tls else None)
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


pg_only = pytest.mark.skipif(connection.vendor != "postgresql",
                             reason="the listener's threads share the test database: needs PostgreSQL (CI sets DATABASE_URL)")


@pg_only
@pytest.mark.django_db(transaction=True)
def test_the_listener_over_tls_stores_what_comes_by_tls_and_refuses_plain_tcp(pki: Pki, patient_a: m.Patient,
                                                                              media_root: Path) -> None:
    listener = DicomListener(site=patient_a.site, port=free_port(),
                             tls=listener_tls_context(str(pki.server_cert), str(pki.server_key)))
    server = listener.start()
    try:
        assert not associates(listener.address[1], None)  # plain TCP to a TLS port
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS",
                             tls_args=(client_context(pki, with_cert=False), "127.0.0.1"))
        assert assoc.is_established
        sent = dataset(patient_id=patient_a.mrn)
        assert int(assoc.send_c_store(sent).Status) == 0
        assoc.release()
    finally:
        server.shutdown()
    assert ImagingInstance.objects.get().sop_instance_uid == sent.SOPInstanceUID


@pg_only
@pytest.mark.django_db(transaction=True)
def test_with_client_cas_only_senders_with_a_signed_certificate_connect(pki: Pki, site_a: m.Site) -> None:
    listener = DicomListener(site=site_a, port=free_port(),
                             tls=listener_tls_context(str(pki.server_cert), str(pki.server_key), str(pki.ca)))
    server = listener.start()
    try:
        assert not associates(listener.address[1], client_context(pki, with_cert=False))
        assert associates(listener.address[1], client_context(pki, with_cert=True))
    finally:
        server.shutdown()


@pytest.mark.django_db
def test_results_go_to_a_pacs_that_speaks_tls_only_when_its_ca_is_set(pki: Pki, patient_a: m.Patient,
                                                                      settings) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    scp, server = start_scp(server_tls)
    settings.CDSS_PACS_URL = scp.url
    settings.CDSS_PACS_TIMEOUT_SECONDS = 5
    try:
        finding = real_finding(upload(patient_a)[0])
        with transaction.atomic():
            plain = pacs_send_enqueue([finding], reason="test")
        assert plain is not None and job_run(plain.pk) == "failed" and scp.received == []

        settings.CDSS_PACS_TLS_CA = str(pki.ca)
        out = io.StringIO()
        call_command("pacs_echo", stdout=out)
        assert "answered C-ECHO" in out.getvalue()
        with transaction.atomic():
            job = pacs_send_enqueue([real_finding(finding.instance, label="effusion")], reason="test")
        assert job is not None and job_run(job.pk) == "succeeded"
        assert len(scp.received) == 1 and ResultDelivery.objects.get().status == "sent"
    finally:
        server.shutdown()


def test_wrong_tls_files_are_named_by_the_check_and_the_command(tmp_path: Path, settings) -> None:
    settings.CDSS_PACS_URL = "dicom://PACS@pacs.example:2762"
    settings.CDSS_PACS_TLS_CA = str(tmp_path / "missing-ca.pem")
    with pytest.raises(SystemCheckError, match=r"CDSS_PACS_TLS_CA .* could not be loaded"):
        call_command("check")
    with pytest.raises(CommandError, match="--tls-key and --tls-client-ca need --tls-cert"):
        call_command("dicom_listener", "--tls-key", "k.pem")
    with pytest.raises(CommandError, match="The TLS certificate, key or client CAs could not be loaded"):
        call_command("dicom_listener", "--tls-cert", str(tmp_path / "missing.pem"))

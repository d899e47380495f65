"""Typed factory_boy factories for the record."""

from __future__ import annotations

import datetime as dt

import factory
from django.contrib.auth.models import Group, User

from patients import models as m


class SiteFactory(factory.django.DjangoModelFactory[m.Site]):
    class Meta:
        model = m.Site
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"site-{n}")
    name = factory.LazyAttribute(lambda o: o.code.replace("-", " ").title())


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


def clinician_of(*sites: m.Site, username: str | None = None) -> User:
    """A user in the clinician group, member of the given sites."""
    user: User = UserFactory(username=username) if username else UserFactory()  # type: ignore[assignment]
    user.groups.add(Group.objects.get_or_create(name="clinician")[0])
    for site in sites:
        m.SiteMembership.objects.get_or_create(user=user, site=site)
    return user


class PatientFactory(factory.django.DjangoModelFactory[m.Patient]):
    class Meta:
        model = m.Patient

    site = factory.SubFactory(SiteFactory)
    fhir_id = factory.Faker("uuid4")
    mrn = factory.Sequence(lambda n: f"MRN{n:06d}")
    family_name = factory.Faker("last_name")
    given_names = factory.Faker("first_name")
    birth_date = dt.date(1960, 5, 17)
    sex = "female"


class ObservationFactory(factory.django.DjangoModelFactory[m.Observation]):
    class Meta:
        model = m.Observation

    patient = factory.SubFactory(PatientFactory)
    fhir_id = factory.Faker("uuid4")
    status = "final"
    category = "laboratory"
    code_system = "http://loinc.org"
    code = "2093-3"
    display = "Cholesterol [Mass/volume] in Serum or Plasma"
    value_quantity = 190.0
    value_unit = "mg/dL"
    effective_at = factory.Sequence(lambda n: dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n))


class ConditionFactory(factory.django.DjangoModelFactory[m.Condition]):
    class Meta:
        model = m.Condition

    patient = factory.SubFactory(PatientFactory)
    fhir_id = factory.Faker("uuid4")
    status = "confirmed"
    clinical_status = "active"
    code_system = "http://snomed.info/sct"
    code = "38341003"
    display = "Hypertension"
    onset_at = dt.datetime(2015, 3, 1, tzinfo=dt.UTC)


class MedicationRequestFactory(factory.django.DjangoModelFactory[m.MedicationRequest]):
    class Meta:
        model = m.MedicationRequest

    patient = factory.SubFactory(PatientFactory)
    fhir_id = factory.Faker("uuid4")
    status = "active"
    intent = "order"
    code_system = "http://www.nlm.nih.gov/research/umls/rxnorm"
    code = "316049"
    display = "Hydrochlorothiazide 25 MG"
    authored_at = dt.datetime(2016, 3, 1, tzinfo=dt.UTC)


class AllergyFactory(factory.django.DjangoModelFactory[m.AllergyIntolerance]):
    class Meta:
        model = m.AllergyIntolerance

    patient = factory.SubFactory(PatientFactory)
    fhir_id = factory.Faker("uuid4")
    status = "confirmed"
    clinical_status = "active"
    code_system = "http://snomed.info/sct"
    code = "91936005"
    display = "Allergy to penicillin"


class EncounterFactory(factory.django.DjangoModelFactory[m.Encounter]):
    class Meta:
        model = m.Encounter

    patient = factory.SubFactory(PatientFactory)
    fhir_id = factory.Faker("uuid4")
    status = "finished"
    class_code = "AMB"
    display = "General examination of patient"
    period_start = dt.datetime(2021, 6, 1, 9, tzinfo=dt.UTC)

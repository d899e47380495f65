"""Demo patients as FHIR R4 collection Bundles (pure Python, no Django).

``demo_bundles`` builds one Bundle per patient from a seed: same seed, same patients, same ids,
so a second load through the importer changes nothing. Nothing is read from disk or the network
and no Faker is used: names come from the small lists below and every draw from one
``random.Random`` per patient (seeded by a string, which Python hashes with SHA-512, so the
result does not depend on PYTHONHASHSEED).

Dates are offsets in days before ``as_of`` (the day the demo is loaded), so the record always
looks current; which resources exist never depends on the calendar, only their dates do.
Loading on a later day therefore updates rows and never adds any.

The values are made up, not drawn from a population study, but each patient's trends follow
their problems and treatment: blood pressure falls after an antihypertensive is started (less
where the patient is "not at goal"), HbA1c falls on metformin and drifts up again, LDL falls on
a statin, eGFR declines faster in chronic kidney disease, and creatinine is derived from eGFR with
the same MDRD equation LOINC 33914-3 names, so the two agree. Every resource carries the HL7
security label HTEST ("test health data").
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .fhir.resources import LOINC, LOINC_GENE_STUDIED, LOINC_GENOTYPE_DISPLAY, RXNORM, SNOMED, UCUM

CVX = "http://hl7.org/fhir/sid/cvx"
HGNC = "http://www.genenames.org/geneId"
NPI = "http://hl7.org/fhir/sid/us-npi"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Tobacco smoking status (LOINC 72166-2) answers, SNOMED CT.
SMOKING_STATUS = {
    "never": ("266919005", "Never smoked tobacco (finding)"),
    "former": ("8517006", "Ex-smoker (finding)"),
    "current": ("449868002", "Smokes tobacco daily (finding)"),
}
# US Core race (OMB categories, CDC race codes), drawn from the patient's id so that adding it
# leaves every other generated value unchanged.
RACES = (("2106-3", "White", 60), ("2054-5", "Black or African American", 15), ("2028-9", "Asian", 10),
         ("2131-1", "Other Race", 15))
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
LOINC_VARIANT_ASSESSMENT = "69548-6"
LOINC_PHENOTYPE = "53040-2"
TEST_DATA_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                 "display": "test health data"}

DEFAULT_PATIENTS = 40
DEFAULT_SEED = 1
WINDOW_DAYS = 5 * 365  # about five years of history per patient

# Every id is a name-based UUID under this namespace, so ids follow from (seed, patient, n).
_NAMESPACE = uuid.UUID("6f1c7a52-3d0b-4e8e-9a57-2c1d5b0e8f43")


@dataclass(frozen=True)
class DemoSite:
    code: str
    name: str
    mrn_prefix: str
    # (given, family, specialty) of the site's clinicians.
    practitioners: tuple[tuple[str, str, str], ...]

    @property
    def organization_id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"organization/{self.code}"))

    def practitioner_id(self, index: int) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"practitioner/{self.code}/{index}"))


GENERAL = DemoSite(
    "demo-general", "General Hospital", "GH",
    (("Amelia", "Hart", "Internal medicine"), ("Rahul", "Mehta", "Family medicine"),
     ("Grace", "Okafor", "Internal medicine"), ("Tomasz", "Nowak", "Emergency medicine")),
)
CARDIOLOGY = DemoSite(
    "demo-cardiology", "Cardiology Clinic", "CC",
    (("Helen", "Whitaker", "Cardiology"), ("Daniel", "Osei", "Cardiology"), ("Sofia", "Marquez", "Cardiology")),
)
DEMO_SITES: tuple[DemoSite, ...] = (GENERAL, CARDIOLOGY)

FEMALE_NAMES = (
    "Mary Linda Susan Margaret Dorothy Helen Patricia Barbara Carol Janet Ruth Joyce Ana Maria Fatima "
    "Mei Priya Aisha Ingrid Olga Rosa Chloe Hannah Grace Nadia Leila Yuki Zainab Elena Teresa"
).split()
MALE_NAMES = (
    "James Robert John Michael William David Richard Joseph Thomas Charles George Edward Frank Raymond "
    "Ahmed Carlos Hiroshi Ivan Kwame Luis Omar Pedro Rajesh Sanjay Wei Jonas Mateo Samuel Peter Arthur"
).split()
FAMILY_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Robinson Walker "
    "Young Allen King Wright Scott Nguyen Hill Adams Baker Nelson Carter Mitchell Perez Roberts Turner "
    "Phillips Campbell Parker Evans Edwards Collins Stewart Sanchez Morris Rogers Reed Cook Morgan Bell "
    "Murphy Bailey Rivera Cooper Richardson Cox Howard Ward Torres Peterson Gray Ramirez James Watson "
    "Brooks Kelly Sanders Price Bennett Wood Barnes Ross Henderson Coleman Jenkins Perry Powell Long "
    "Patel Kim Chen Singh Kowalski Novak Okonkwo Haddad Yamamoto Ivanova Larsen Moreau Rossi Schmidt"
).split()

# key: (SNOMED code, SNOMED display, short label used in notes)
CONDITIONS: dict[str, tuple[str, str, str]] = {
    "htn": ("38341003", "Hypertensive disorder, systemic arterial (disorder)", "hypertension"),
    "t2dm": ("44054006", "Diabetes mellitus type 2 (disorder)", "type 2 diabetes mellitus"),
    "prediabetes": ("15777000", "Prediabetes (finding)", "prediabetes"),
    "hld": ("55822004", "Hyperlipidemia (disorder)", "hyperlipidemia"),
    "cad": ("53741008", "Coronary arteriosclerosis (disorder)", "coronary artery disease"),
    "old_mi": ("399211009", "History of myocardial infarction (situation)", "prior myocardial infarction"),
    "af": ("49436004", "Atrial fibrillation (disorder)", "atrial fibrillation"),
    "hf": ("84114007", "Heart failure (disorder)", "heart failure"),
    "ckd3": ("433144002", "Chronic kidney disease stage 3 (disorder)", "chronic kidney disease stage 3"),
    "asthma": ("195967001", "Asthma (disorder)", "asthma"),
    "obesity": ("162864005", "Body mass index 30+ - obesity (finding)", "obesity"),
    "oa_knee": ("239873007", "Osteoarthritis of knee (disorder)", "osteoarthritis of the knee"),
    "sinusitis": ("444814009", "Viral sinusitis (disorder)", "sinusitis"),
    "bronchitis": ("10509002", "Acute bronchitis (disorder)", "acute bronchitis"),
}
CHRONIC = ("htn", "t2dm", "prediabetes", "hld", "cad", "af", "hf", "ckd3", "asthma", "oa_knee")
CARDIAC = ("cad", "af", "hf", "htn")

# key: (RxNorm code, RxNorm name, label used in notes, dosage text, as needed)
MEDICATIONS: dict[str, tuple[str, str, str, str, bool]] = {
    "lisinopril": ("314076", "lisinopril 10 MG Oral Tablet", "lisinopril 10 mg",
                   "Take 1 tablet (10 mg) by mouth once daily.", False),
    "amlodipine": ("197361", "amlodipine 5 MG Oral Tablet", "amlodipine 5 mg",
                   "Take 1 tablet (5 mg) by mouth once daily.", False),
    "hctz": ("310798", "hydrochlorothiazide 25 MG Oral Tablet", "hydrochlorothiazide 25 mg",
             "Take 1 tablet (25 mg) by mouth once daily in the morning.", False),
    "metformin": ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
                  "metformin ER 500 mg", "Take 1 tablet (500 mg) by mouth once daily with the evening meal.", False),
    "atorvastatin": ("617310", "atorvastatin 20 MG Oral Tablet", "atorvastatin 20 mg",
                     "Take 1 tablet (20 mg) by mouth once daily.", False),
    "simvastatin": ("312961", "simvastatin 20 MG Oral Tablet", "simvastatin 20 mg",
                    "Take 1 tablet (20 mg) by mouth once daily in the evening.", False),
    "aspirin": ("243670", "aspirin 81 MG Oral Tablet", "aspirin 81 mg",
                "Take 1 tablet (81 mg) by mouth once daily.", False),
    "clopidogrel": ("309362", "clopidogrel 75 MG Oral Tablet", "clopidogrel 75 mg",
                    "Take 1 tablet (75 mg) by mouth once daily.", False),
    "metoprolol": ("866412", "24 HR metoprolol succinate 100 MG Extended Release Oral Tablet",
                   "metoprolol succinate ER 100 mg", "Take 1 tablet (100 mg) by mouth once daily.", False),
    "nitroglycerin": ("705129", "nitroglycerin 0.4 MG/ACTUAT Mucosal Spray", "nitroglycerin spray 0.4 mg",
                      "1 spray under the tongue as needed for chest pain; may repeat every 5 minutes, up to 3 doses.",
                      True),
    "warfarin": ("855332", "warfarin sodium 5 MG Oral Tablet", "warfarin 5 mg",
                 "Take 1 tablet (5 mg) by mouth once daily in the evening, or as directed by the anticoagulation "
                 "clinic (target INR 2.0-3.0).", False),
    "apixaban": ("1364445", "apixaban 5 MG Oral Tablet", "apixaban 5 mg",
                 "Take 1 tablet (5 mg) by mouth twice daily.", False),
    "furosemide": ("313988", "furosemide 40 MG Oral Tablet", "furosemide 40 mg",
                   "Take 1 tablet (40 mg) by mouth once daily in the morning.", False),
    "albuterol": ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "albuterol inhaler",
                  "Inhale 2 puffs every 4 to 6 hours as needed for wheezing or shortness of breath.", True),
    "fluticasone": ("895994", "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
                    "fluticasone inhaler 44 mcg", "Inhale 2 puffs twice daily; rinse mouth after use.", False),
    "acetaminophen": ("313782", "acetaminophen 325 MG Oral Tablet", "acetaminophen 325 mg",
                      "Take 2 tablets (650 mg) by mouth every 6 hours as needed for pain; no more than 3 g a day.",
                      True),
    "naproxen": ("849574", "naproxen sodium 220 MG Oral Tablet", "naproxen 220 mg",
                 "Take 1 tablet (220 mg) by mouth every 12 hours as needed for knee pain, with food.", True),
    "amox_clav": ("562251", "amoxicillin 250 MG / clavulanate 125 MG Oral Tablet", "amoxicillin-clavulanate",
                  "Take 1 tablet by mouth every 8 hours for 7 days.", False),
    "amoxicillin": ("308192", "amoxicillin 500 MG Oral Capsule", "amoxicillin 500 mg",
                    "Take 1 capsule (500 mg) by mouth every 8 hours.", False),
}
BP_AGENTS = ("lisinopril", "amlodipine", "hctz", "metoprolol")

# key: (SNOMED code, display, category, criticality, reaction code, reaction display, label)
ALLERGIES: dict[str, tuple[str, str, str, str, str, str, str]] = {
    "penicillin": ("91936005", "Allergy to penicillin", "medication", "high", "247472004", "Hives", "penicillin"),
    "sulfonamide": ("91939003", "Allergy to sulfonamide", "medication", "low", "271807003", "Eruption of skin",
                    "sulfonamides"),
    "peanut": ("91935009", "Allergy to peanuts", "food", "high", "39579001", "Anaphylaxis", "peanuts"),
    "shellfish": ("300913006", "Shellfish allergy", "food", "low", "247472004", "Hives", "shellfish"),
    "latex": ("300916003", "Latex allergy", "environment", "low", "271807003", "Eruption of skin", "latex"),
}

# key: (CVX code, display)
VACCINES: dict[str, tuple[str, str]] = {
    "flu": ("140", "Influenza, seasonal, injectable, preservative free"),
    "td": ("113", "Td (adult) preservative free"),
    "pcv13": ("133", "Pneumococcal conjugate PCV 13"),
    "ppsv23": ("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    "zoster": ("187", "zoster vaccine recombinant"),
    "covid": ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose"),
}

# Pharmacogenes: HGNC id and (diplotype, phenotype, weight). Phenotype terms follow CPIC.
PGX: dict[str, tuple[str, tuple[tuple[str, str, float], ...]]] = {
    "CYP2C19": ("HGNC:2621", (("*1/*1", "Normal metabolizer", 0.38), ("*1/*2", "Intermediate metabolizer", 0.27),
                              ("*2/*2", "Poor metabolizer", 0.15), ("*1/*17", "Rapid metabolizer", 0.15),
                              ("*17/*17", "Ultrarapid metabolizer", 0.05))),
    "CYP2C9": ("HGNC:2623", (("*1/*1", "Normal metabolizer", 0.6), ("*1/*2", "Intermediate metabolizer", 0.15),
                             ("*1/*3", "Intermediate metabolizer", 0.15), ("*3/*3", "Poor metabolizer", 0.1))),
    "SLCO1B1": ("HGNC:10959", (("*1/*1", "Normal function", 0.6), ("*1/*5", "Decreased function", 0.28),
                               ("*5/*5", "Poor function", 0.12))),
    "CYP2D6": ("HGNC:2625", (("*1/*1", "Normal metabolizer", 0.6), ("*1/*4", "Intermediate metabolizer", 0.3),
                             ("*4/*4", "Poor metabolizer", 0.1))),
}

# (LOINC, display, UCUM unit)
VITALS = {
    "bp": ("85354-9", "Blood pressure panel with all children optional", ""),
    "sbp": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "dbp": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "hr": ("8867-4", "Heart rate", "/min"),
    "height": ("8302-2", "Body height", "cm"),
    "weight": ("29463-7", "Body weight", "kg"),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
}
LABS = {
    "a1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%"),
    "chol": ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL"),
    "hdl": ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL"),
    "ldl": ("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "mg/dL"),
    "tg": ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL"),
    "creat": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL"),
    "glucose": ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL"),
    "egfr": ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma "
                        "by Creatinine-based formula (MDRD)", "mL/min/{1.73_m2}"),
    "k": ("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L"),
    "inr": ("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}"),
}
NOTE_TYPES = {
    "hp": ("34117-2", "History and physical note"),
    "progress": ("11506-3", "Progress note"),
    "consult": ("11488-4", "Consult note"),
    "ed": ("34111-5", "Emergency department note"),
}
# kind: (SNOMED code, display, encounter class)
ENCOUNTER_TYPES = {
    "annual": ("185349003", "Encounter for check up (procedure)", "AMB"),
    "followup": ("390906007", "Follow-up encounter (procedure)", "AMB"),
    "symptom": ("185345009", "Encounter for symptom (procedure)", "AMB"),
    "consult": ("11429006", "Consultation (procedure)", "AMB"),
    "emergency": ("50849002", "Emergency room admission (procedure)", "EMER"),
}
CLASS_DISPLAY = {"AMB": "ambulatory", "EMER": "emergency"}
PROCEDURES = {
    "ecg": ("29303009", "Electrocardiographic procedure"),
    "echo": ("40701008", "Echocardiography (procedure)"),
}

# Patients 0-4 always have these problems, so that even a small demo shows the interesting cases:
# uncontrolled diabetes, clopidogrel with a CYP2C19 poor metabolizer, metformin with falling
# eGFR, warfarin with INR checks, asthma with a penicillin allergy. Patient 4 also comes to the
# emergency department a few hours before the load (see ``_PatientBuilder.add_acute_visit``).
SHOWCASE: tuple[dict[str, Any], ...] = (
    {"conditions": {"htn", "t2dm", "hld"}, "sex": "female", "age": 64, "uncontrolled": True},
    {"conditions": {"cad", "hld", "htn", "old_mi"}, "sex": "male", "age": 67, "clopidogrel": True,
     "genes": {"CYP2C19": "*2/*2"}},
    {"conditions": {"ckd3", "t2dm", "htn", "oa_knee"}, "sex": "male", "age": 72, "naproxen": True},
    {"conditions": {"af", "hf", "htn"}, "sex": "female", "age": 78, "anticoagulant": "warfarin",
     "genes": {"CYP2C9": "*1/*3"}},
    {"conditions": {"asthma"}, "sex": "female", "age": 41, "allergies": {"penicillin"}, "acute_visit": True},
)

# The acute visit's bedside observations (LOINC, display, value, UCUM unit), fixed values: qSOFA 3
# (respiratory rate >= 22, systolic BP <= 100, GCS < 15; Singer et al., JAMA 2016, Box 4) and
# NEWS2 14 on Scale 1 (RCP 2017, Chart 1: RR 24 -> 2, SpO2 93% -> 2, oxygen -> 2, SBP 95 -> 2,
# HR 112 -> 2, not alert -> 3, 38.6 Cel -> 1).
ACUTE_VITALS: tuple[tuple[str, str, float, str], ...] = (
    ("9279-1", "Respiratory rate", 24, "/min"),
    ("8867-4", "Heart rate", 112, "/min"),
    ("8310-5", "Body temperature", 38.6, "Cel"),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", 93, "%"),
    ("3151-8", "Inhaled oxygen flow rate", 2, "L/min"),
    ("9269-2", "Glasgow coma score total", 14, "{score}"),
)
ACUTE_BP = (95, 58)  # systolic, diastolic mm[Hg]
ACUTE_INDEX = next(i for i, case in enumerate(SHOWCASE) if case.get("acute_visit"))  # the patient with it
ACUTE_HOURS_BEFORE = 3  # the visit starts this long before the load (or midnight of ``as_of``)


def acute_visit_start(now: dt.datetime) -> dt.datetime:
    """When the acute visit of a demo loaded at ``now`` starts: ``ACUTE_HOURS_BEFORE`` hours
    earlier, on the quarter hour, so that its vital signs stay within the acute scores' 24 hours
    for most of a day from the load, whatever the time of day."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    start = now.astimezone(dt.UTC) - dt.timedelta(hours=ACUTE_HOURS_BEFORE)
    return start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)


@dataclass(frozen=True)
class DemoPatient:
    site: DemoSite
    mrn: str
    name: str
    bundle: dict[str, Any]


def demo_site_for(index: int) -> DemoSite:
    """Two patients in five go to the cardiology clinic, the rest to the general hospital."""
    return CARDIOLOGY if index % 5 in (1, 3) else GENERAL


def demo_mrn(seed: int, index: int) -> str:
    """Patient ``index``'s MRN for ``seed``: its site's prefix and seven digits of (seed, index)."""
    return f"{demo_site_for(index).mrn_prefix}{uuid.uuid5(_NAMESPACE, f'{seed}/{index}/mrn').int % 10**7:07d}"


def demo_bundles(*, patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED,
                 as_of: dt.date, acute_start: dt.datetime | None = None) -> list[DemoPatient]:
    """One collection Bundle per patient. Patient ``i`` depends only on (seed, i), so a larger
    ``patients`` adds patients and leaves the first ones as they were. ``acute_start``: when the
    emergency visit of the acute showcase patient starts (timezone-aware; default
    ``ACUTE_HOURS_BEFORE`` hours before midnight of ``as_of``)."""
    if acute_start is not None and acute_start.tzinfo is None:
        raise ValueError("acute_start must be timezone-aware")
    return [_PatientBuilder(seed=seed, index=i, as_of=as_of, acute_start=acute_start).build()
            for i in range(patients)]


# ---------------------------------------------------------------------------------------------


@dataclass
class _Dx:
    key: str
    enc: int  # the encounter that recorded it (0 for a problem known at the first visit)
    onset: dt.datetime
    id: str
    abated: dt.datetime | None = None


@dataclass
class _Rx:
    key: str
    start: int
    reason: str
    id: str
    stop: int | None = None  # encounter at which it was stopped
    course_days: int | None = None  # a short course (completed)


@dataclass
class _Enc:
    index: int
    days_ago: int
    start: dt.datetime
    end: dt.datetime
    kind: str
    reason: str
    practitioner: int
    id: str


@dataclass
class _Results:
    """The latest values at an encounter, for the note."""

    vitals: dict[str, float] = field(default_factory=dict)
    labs: dict[str, tuple[float, dt.datetime]] = field(default_factory=dict)


def _ts(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds")


def _ref(rtype_id: str, display: str = "") -> dict[str, str]:
    out = {"reference": f"urn:uuid:{rtype_id}"}
    if display:
        out["display"] = display
    return out


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _mdrd_creatinine(egfr: float, age: float, female: bool) -> float:
    """Serum creatinine (mg/dL) that gives ``egfr`` by the IDMS-traceable 4-variable MDRD equation
    (Levey et al., Clin Chem 2007): eGFR = 175 x Scr^-1.154 x age^-0.203 x 0.742 (female), in
    mL/min/1.73 m2; race coefficient omitted. Valid for adults, eGFR up to about 60-90."""
    factor = 175 * age ** -0.203 * (0.742 if female else 1.0)
    return (egfr / factor) ** (1 / -1.154)


def _mdrd_egfr(creatinine: float, age: float, female: bool) -> float:
    return 175 * creatinine ** -1.154 * age ** -0.203 * (0.742 if female else 1.0)


class _PatientBuilder:
    def __init__(self, *, seed: int, index: int, as_of: dt.date, acute_start: dt.datetime | None = None) -> None:
        self.seed = seed
        self.index = index
        self.rng = random.Random(f"cdss-demo/{seed}/{index}")  # noqa: S311 - made-up data, not secrets
        self.site = demo_site_for(index)
        self.today = dt.datetime(as_of.year, as_of.month, as_of.day, tzinfo=dt.UTC)
        self.acute_start = acute_start or self.today - dt.timedelta(hours=ACUTE_HOURS_BEFORE)
        self.counter: Counter[str] = Counter()
        self.entries: list[dict[str, Any]] = []
        self.practitioners_used: set[int] = set()
        self.showcase: dict[str, Any] = SHOWCASE[index] if index < len(SHOWCASE) else {}
        self.patient_id = self.new_id("Patient")

    # -- ids and entries ----------------------------------------------------------------------

    def new_id(self, kind: str) -> str:
        self.counter[kind] += 1
        return str(uuid.uuid5(_NAMESPACE, f"{self.seed}/{self.index}/{kind}/{self.counter[kind]}"))

    def add(self, resource: dict[str, Any]) -> None:
        resource["meta"] = {"tag": [dict(TEST_DATA_TAG)]}
        self.entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})

    @property
    def subject(self) -> dict[str, str]:
        return _ref(self.patient_id, self.full_name)

    def practitioner_ref(self, index: int) -> dict[str, str]:
        given, family, _ = self.site.practitioners[index]
        self.practitioners_used.add(index)
        return _ref(self.site.practitioner_id(index), f"Dr. {given} {family}")

    # -- the patient ---------------------------------------------------------------------------

    def build(self) -> DemoPatient:
        rng = self.rng
        show = self.showcase
        self.sex = show.get("sex") or rng.choice(("female", "male"))
        self.female = self.sex == "female"
        self.given = rng.choice(FEMALE_NAMES if self.female else MALE_NAMES)
        self.family = rng.choice(FAMILY_NAMES)
        self.full_name = f"{self.given} {self.family}"
        cardiology = self.site is CARDIOLOGY
        self.age = show.get("age") or (rng.randint(50, 89) if cardiology else rng.randint(24, 88))
        birth = self.today.date() - dt.timedelta(days=int(self.age * 365.25) + rng.randint(0, 360))
        self.mrn = demo_mrn(self.seed, self.index)
        self.conditions = set(show["conditions"]) if show else self.pick_conditions(cardiology)
        self.allergies: set[str] = set(show.get("allergies", ())) if show else {
            k for k, p in (("penicillin", 0.18), ("sulfonamide", 0.1), ("peanut", 0.06), ("shellfish", 0.06),
                           ("latex", 0.04)) if rng.random() < p
        }
        self.smoking = rng.choices(("never", "former", "current"), (0.55, 0.3, 0.15))[0]
        self.family_history = rng.sample(FAMILY_HISTORY, rng.randint(1, 3))
        self.surgical_history = rng.sample(SURGICAL_HISTORY, rng.randint(0, 2))
        if self.female and rng.random() < 0.3:
            self.surgical_history.append("Cesarean section.")
        self.occupation = "retired" if self.age >= 67 else rng.choice(OCCUPATIONS)
        self.set_baselines()

        self.add_organization()
        self.add({
            "resourceType": "Patient",
            "id": self.patient_id,
            "identifier": [{
                "use": "usual",
                "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "MR", "display": "Medical Record Number"}],
                         "text": "Medical Record Number"},
                "system": f"urn:cdss:demo:{self.site.code}:mrn",
                "value": self.mrn,
            }],
            "active": True,
            "name": [{"use": "official", "family": self.family, "given": [self.given],
                      "prefix": ["Ms." if self.female else "Mr."]}],
            "telecom": [{"system": "phone", "value": f"555-01{rng.randint(0, 99):02d}", "use": "home"}],
            "gender": self.sex,
            "birthDate": birth.isoformat(),
            "extension": [_race_extension(self.patient_id)],
            "managingOrganization": _ref(self.site.organization_id, self.site.name),
        })
        self.plan_encounters()
        self.plan_diagnoses()
        self.plan_medications()
        self.plan_genomics()
        self.write_timeline()
        if show.get("acute_visit"):
            self.add_acute_visit()
        for index in sorted(self.practitioners_used):
            self.add_practitioner(index)
        bundle = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid5(_NAMESPACE, f"{self.seed}/{self.index}/bundle")),
            "type": "collection",
            "timestamp": _ts(self.today),
            "entry": self.entries,
        }
        return DemoPatient(site=self.site, mrn=self.mrn, name=self.full_name, bundle=bundle)

    def pick_conditions(self, cardiology: bool) -> set[str]:
        rng, age = self.rng, self.age

        def p(general: float, cardio: float) -> float:
            return cardio if cardiology else general

        out: set[str] = set()
        if rng.random() < p(0.45, 0.7) * (1.3 if age > 55 else 0.7):
            out.add("htn")
        if rng.random() < p(0.2, 0.3) * (1.3 if age > 50 else 0.6):
            out.add("t2dm")
        elif rng.random() < 0.2:
            out.add("prediabetes")
        if rng.random() < p(0.35, 0.6):
            out.add("hld")
        if age > 45 and rng.random() < p(0.07, 0.45):
            out |= {"cad", "hld"}
            if rng.random() < 0.4:
                out.add("old_mi")
        if age > 55 and rng.random() < p(0.06, 0.35):
            out.add("af")
        if age > 55 and rng.random() < p(0.04, 0.25):
            out.add("hf")
        if age > 50 and rng.random() < 0.06 + 0.1 * ("t2dm" in out) + 0.05 * ("htn" in out):
            out.add("ckd3")
        if rng.random() < p(0.14, 0.05):
            out.add("asthma")
        if age > 55 and rng.random() < 0.2:
            out.add("oa_knee")
        return out

    def set_baselines(self) -> None:
        """Per-patient levels that the trends start from."""
        rng, c = self.rng, self.conditions
        self.height = rng.gauss(162, 6) if self.female else rng.gauss(176, 7)
        bmi = rng.uniform(21.5, 33.5) + (3 if "t2dm" in c else 0) + (1.5 if "hf" in c else 0)
        self.weight0 = bmi * (self.height / 100) ** 2
        self.weight_drift = rng.uniform(-1.0, 1.2)  # kg a year
        if bmi >= 30:
            self.conditions.add("obesity")
        self.sbp0 = rng.uniform(146, 166) if "htn" in c else rng.uniform(108, 128) + max(0, self.age - 50) * 0.2
        self.controlled = not self.showcase.get("uncontrolled") and rng.random() < 0.7
        self.hr0 = rng.uniform(62, 80)
        self.a1c0 = (rng.uniform(7.4, 9.2) if "t2dm" in c else rng.uniform(5.8, 6.3) if "prediabetes" in c
                     else rng.uniform(4.9, 5.6))
        self.ldl0 = rng.uniform(150, 195) if "hld" in c else rng.uniform(80, 130)
        self.hdl0 = rng.uniform(48, 72) if self.female else rng.uniform(36, 56)
        self.tg0 = rng.uniform(90, 230) if ("t2dm" in c or "hld" in c) else rng.uniform(60, 150)
        if "ckd3" in c:
            self.egfr0, self.egfr_slope = rng.uniform(52, 59), rng.uniform(2.0, 4.0)
        else:
            self.egfr0 = min(110.0, rng.uniform(70, 105) - max(0, self.age - 40) * 0.4)
            self.egfr_slope = rng.uniform(0.3, 1.2) + (0.6 if "t2dm" in c else 0)

    # -- planning --------------------------------------------------------------------------------

    def plan_encounters(self) -> None:
        rng = self.rng
        chronic = len(self.conditions & set(CHRONIC))
        n = min(20, max(6, rng.randint(5, 9) + 2 * min(chronic, 5)))
        first = rng.randint(WINDOW_DAYS - 100, WINDOW_DAYS)
        last = rng.randint(7, 75)
        middle = sorted(rng.sample(range(last + 10, first - 10), n - 2), reverse=True)
        days = [first, *middle, last]
        self.encs: list[_Enc] = []
        annual_block = -1
        problems = sorted(self.conditions & set(CHRONIC))
        emergency_at = rng.randint(2, n - 2) if ({"af", "hf"} & self.conditions) else -1
        acute_at = {rng.randint(1, n - 1): rng.choice(("sinusitis", "bronchitis"))} if rng.random() < 0.45 else {}
        acute_at.pop(emergency_at, None)
        for i, days_ago in enumerate(days):
            block = (first - days_ago) // 365
            reason = ""
            if i == 0 and self.site is CARDIOLOGY:
                kind = "consult"
                reason = next((k for k in CARDIAC if k in self.conditions), "")
            elif i == emergency_at:
                kind = "emergency"
                reason = "af" if "af" in self.conditions and ("hf" not in self.conditions or rng.random() < 0.5) \
                    else "hf"
            elif i in acute_at:
                kind, reason = "symptom", acute_at[i]
            elif block > annual_block:
                kind = "annual"
            elif problems:
                kind, reason = "followup", problems[i % len(problems)]
            else:
                kind = "annual" if rng.random() < 0.3 else "symptom"
                reason = "" if kind == "annual" else rng.choice(("sinusitis", "bronchitis"))
            if kind in ("annual", "consult"):
                annual_block = block
            start = self.today - dt.timedelta(days=days_ago) + dt.timedelta(
                hours=rng.randint(8, 16), minutes=rng.choice((0, 15, 30, 45)))
            length = dt.timedelta(hours=rng.randint(3, 7)) if kind == "emergency" else dt.timedelta(
                minutes=rng.choice((20, 30, 40)))
            if self.site is CARDIOLOGY:
                practitioner = i % len(self.site.practitioners) if i else 0
            else:
                practitioner = 3 if kind == "emergency" else (self.index % 3 if rng.random() < 0.8 else rng.randint(0, 2))
            self.encs.append(_Enc(index=i, days_ago=days_ago, start=start, end=start + length, kind=kind,
                                  reason=reason, practitioner=practitioner, id=self.new_id("Encounter")))

    def plan_diagnoses(self) -> None:
        """Problems known at the first visit, or diagnosed at a later one (about a third)."""
        rng, n = self.rng, len(self.encs)
        self.dx: dict[str, _Dx] = {}
        for key in sorted(self.conditions):
            if key in CHRONIC and not self.showcase and n >= 8 and rng.random() < 0.3:
                enc = rng.randint(1, n // 2)
                onset = self.encs[enc].start
            else:
                enc = 0
                years = rng.uniform(1, 12) if key != "old_mi" else rng.uniform(2, 10)
                onset = self.encs[0].start - dt.timedelta(days=int(years * 365))
            self.dx[key] = _Dx(key=key, enc=enc, onset=onset, id=self.new_id("Condition"))
        # Acute problems: one per visit for a symptom, resolved a week or two later.
        for visit in self.encs:
            if visit.kind == "symptom":
                dx = _Dx(key=visit.reason, enc=visit.index, id=self.new_id("Condition"),
                         onset=visit.start - dt.timedelta(days=rng.randint(5, 12)))
                dx.abated = visit.start + dt.timedelta(days=rng.randint(7, 14))
                self.dx[f"{visit.reason}@{visit.index}"] = dx

    def has(self, key: str, at: int) -> bool:
        dx = self.dx.get(key)
        return dx is not None and dx.enc <= at

    def plan_medications(self) -> None:
        rng, n, show = self.rng, len(self.encs), self.showcase
        self.rx: list[_Rx] = []

        def start(key: str, at: int, reason: str, **kw: Any) -> _Rx:
            existing = next((r for r in self.rx if r.key == key and r.stop is None and not r.course_days), None)
            if existing:
                return existing
            rx = _Rx(key=key, start=at, reason=reason, id=self.new_id("MedicationRequest"), **kw)
            self.rx.append(rx)
            return rx

        dx = self.dx
        if "htn" in dx:
            at = dx["htn"].enc
            first = "lisinopril" if ({"t2dm", "ckd3", "hf"} & self.conditions or rng.random() < 0.6) else "amlodipine"
            start(first, at, "htn")
            if not self.controlled and n - at > 4:
                start("amlodipine" if first == "lisinopril" else "hctz", rng.randint(at + 2, n - 2), "htn")
        if "t2dm" in dx:
            start("metformin", dx["t2dm"].enc, "t2dm")
        if "hld" in dx:
            at = dx["hld"].enc
            if rng.random() < 0.3 and not show.get("clopidogrel"):
                simva = start("simvastatin", at, "hld")
                if rng.random() < 0.4 and n - at > 5:
                    simva.stop = rng.randint(at + 2, n - 2)
                    start("atorvastatin", simva.stop, "hld")
            else:
                start("atorvastatin", at, "hld")
        if "cad" in dx:
            at = dx["cad"].enc
            start("aspirin", at, "cad")
            if show.get("clopidogrel") or rng.random() < 0.6:
                start("clopidogrel", at, "cad")
            start("metoprolol", at, "cad")
            start("nitroglycerin", at, "cad")
        if "af" in dx:
            at = dx["af"].enc
            anticoagulant = show.get("anticoagulant") or ("warfarin" if rng.random() < 0.45 else "apixaban")
            rx = start(anticoagulant, at, "af")
            if anticoagulant == "warfarin" and not show and rng.random() < 0.35 and n - at > 5:
                rx.stop = rng.randint(at + 2, n - 2)
                start("apixaban", rx.stop, "af")
            start("metoprolol", at, "af")
        if "hf" in dx:
            at = dx["hf"].enc
            start("furosemide", at, "hf")
            start("lisinopril", at, "hf")
            start("metoprolol", at, "hf")
        if "asthma" in dx:
            start("albuterol", dx["asthma"].enc, "asthma")
            if rng.random() < 0.6:
                start("fluticasone", dx["asthma"].enc, "asthma")
        if "oa_knee" in dx:
            at = dx["oa_knee"].enc
            start("acetaminophen", at, "oa_knee")
            if show.get("naproxen") or rng.random() < 0.4:
                start("naproxen", at + (1 if at + 1 < n else 0), "oa_knee")
        for key, d in sorted(dx.items()):
            if key.startswith("sinusitis@") and "penicillin" not in self.allergies and rng.random() < 0.5:
                start("amox_clav", d.enc, key, course_days=7)

    def active_meds(self, at: int) -> list[_Rx]:
        return [r for r in self.rx if r.start <= at and (r.stop is None or at < r.stop)
                and (r.course_days is None or r.start == at)]

    def on(self, key: str, at: int) -> bool:
        return any(r.key == key for r in self.active_meds(at))

    def plan_genomics(self) -> None:
        rng = self.rng
        self.genes: dict[str, tuple[str, str, int]] = {}  # gene -> (diplotype, phenotype, encounter)
        wanted: dict[str, int] = {}
        forced: dict[str, str] = self.showcase.get("genes", {})
        for gene, drug, p in (("CYP2C19", "clopidogrel", 0.85), ("CYP2C9", "warfarin", 0.6),
                              ("SLCO1B1", "simvastatin", 0.6)):
            rx = next((r for r in self.rx if r.key == drug), None)
            if gene in forced or (rx is not None and rng.random() < p):
                wanted[gene] = rx.start if rx else 0
        if not wanted and not self.showcase and rng.random() < 0.12:
            wanted[rng.choice(("CYP2D6", "CYP2C19"))] = rng.randint(0, len(self.encs) - 1)
        for gene, at in sorted(wanted.items()):
            options = PGX[gene][1]
            if gene in forced:
                diplotype, phenotype = next((d, ph) for d, ph, _ in options if d == forced[gene])
            else:
                diplotype, phenotype, _ = rng.choices(options, [w for *_, w in options])[0]
            self.genes[gene] = (diplotype, phenotype, at)

    # -- values ----------------------------------------------------------------------------------

    def years(self, enc: _Enc) -> float:
        return (self.encs[0].days_ago - enc.days_ago) / 365.25

    def age_at(self, enc: _Enc) -> float:
        return self.age - enc.days_ago / 365.25

    def vitals(self, enc: _Enc) -> dict[str, float]:
        rng, i, y = self.rng, enc.index, self.years(enc)
        agents = [k for k in BP_AGENTS if self.on(k, i)]
        effect = 0.0
        for n, _ in enumerate(agents):
            effect += (12 if n == 0 else 7) * (1.0 if self.controlled else 0.45)
        sbp = self.sbp0 + 0.8 * y - effect + rng.gauss(0, 6) + (12 if enc.kind == "emergency" else 0)
        dbp = 0.48 * sbp + rng.uniform(10, 18) + rng.gauss(0, 3)
        hr = self.hr0 + rng.gauss(0, 5)
        if self.has("af", i) and not self.on("metoprolol", i):
            hr += 24
        if self.on("metoprolol", i):
            hr -= 8
        if enc.kind == "emergency" and enc.reason == "af":
            hr = rng.uniform(118, 142)
        weight = self.weight0 + self.weight_drift * y + rng.gauss(0, 0.8)
        if enc.kind == "emergency" and enc.reason == "hf":
            weight += rng.uniform(2.5, 4.5)
        height = self.height + rng.gauss(0, 0.4)
        return {
            "sbp": round(sbp), "dbp": round(dbp), "hr": round(max(48, hr)),
            "height": round(height, 1), "weight": round(weight, 1),
            "bmi": round(weight / (self.height / 100) ** 2, 1),
        }

    def a1c(self, enc: _Enc) -> float:
        i, y = enc.index, self.years(enc)
        value = self.a1c0
        if "t2dm" in self.dx:
            dx = self.dx["t2dm"]
            years_to_dx = (enc.days_ago - self.encs[dx.enc].days_ago) / 365.25
            if years_to_dx > 0:  # before diagnosis: lower, rising towards it
                value = max(6.1, value - 0.35 * years_to_dx)
            value += 0.12 * y
            if self.on("metformin", i):
                value -= 1.1 if self.controlled else 0.5
        elif "prediabetes" in self.dx:
            value += 0.05 * y
        return round(value + self.rng.gauss(0, 0.15), 1)

    def labs(self, enc: _Enc, panels: set[str]) -> dict[str, float]:
        rng, i, y, out = self.rng, enc.index, self.years(enc), {}
        if "a1c" in panels:
            out["a1c"] = self.a1c(enc)
        if "lipids" in panels:
            ldl = self.ldl0 * (0.57 if self.on("atorvastatin", i) else 0.65 if self.on("simvastatin", i) else 1.0)
            ldl += rng.gauss(0, 8)
            hdl = self.hdl0 + rng.gauss(0, 3)
            tg = self.tg0 * (0.85 if self.on("atorvastatin", i) else 1.0) + rng.gauss(0, 15)
            out |= {"ldl": round(ldl), "hdl": round(hdl), "tg": round(tg),
                    # Friedewald: total = LDL + HDL + TG/5 (mg/dL)
                    "chol": round(ldl + hdl + tg / 5)}
        if "bmp" in panels:
            age = self.age_at(enc)
            egfr = max(24.0, self.egfr0 - self.egfr_slope * y)
            creat = _mdrd_creatinine(egfr, age, self.female) + rng.gauss(0, 0.04)
            a1c = self.a1c(enc) if "a1c" not in out else out["a1c"]
            glucose = 28.7 * a1c - 46.7 + rng.gauss(0, 10)  # ADAG estimated average glucose (Nathan 2008)
            k = 4.2 + rng.gauss(0, 0.25) + (0.3 if self.has("ckd3", i) else 0) + (0.2 if self.on("lisinopril", i) else 0)
            out |= {"creat": round(creat, 2), "egfr": round(_mdrd_egfr(round(creat, 2), age, self.female)),
                    "glucose": round(glucose), "k": round(k, 1)}
        if "inr" in panels:
            out["inr"] = round(min(4.2, max(1.3, rng.gauss(2.5, 0.5))), 1)
        return out

    # -- writing ---------------------------------------------------------------------------------

    def write_timeline(self) -> None:
        rng = self.rng
        results = _Results()
        last_lab: dict[str, int] = {}
        given: set[str] = set()
        flu_blocks: set[int] = set()
        note_at = {0: "consult" if self.site is CARDIOLOGY else "hp", len(self.encs) - 1: "progress"}
        for enc in self.encs:
            if enc.kind == "emergency":
                note_at[enc.index] = "ed"
        followups = [e.index for e in self.encs if e.kind == "followup" and e.index not in note_at]
        if followups and rng.random() < 0.6:
            note_at[rng.choice(followups)] = "progress"

        for enc in self.encs:
            i = enc.index
            self.add_encounter(enc)
            for dx in self.dx.values():
                if dx.enc == i:
                    self.add_condition(dx)
            if i == 0:
                for key in sorted(self.allergies):
                    self.add_allergy(key, enc)
            for rx in self.rx:
                if rx.start == i:
                    self.add_medication(rx)
            vitals = self.vitals(enc)
            self.add_vitals(enc, vitals)
            results.vitals = vitals

            panels: set[str] = set()
            since = {k: self.encs[v].days_ago - enc.days_ago for k, v in last_lab.items()}
            if enc.kind in ("annual", "consult", "emergency"):
                panels |= {"bmp"}
            if enc.kind in ("annual", "consult") and since.get("lipids", 999) > 300:
                panels.add("lipids")
            if (("t2dm" in self.dx and since.get("a1c", 999) >= 80)
                    or (enc.kind == "annual" and ("prediabetes" in self.dx or rng.random() < 0.25))):
                panels.add("a1c")
            if self.has("ckd3", i) and since.get("bmp", 999) >= 80:
                panels.add("bmp")
            if (self.has("hld", i) or self.has("cad", i)) and since.get("lipids", 999) >= 300:
                panels.add("lipids")
            if self.on("warfarin", i):
                panels.add("inr")
            values = self.labs(enc, panels)
            for panel in panels:
                last_lab[panel] = i
            for key, value in values.items():
                self.add_lab(enc, key, value)
                results.labs[key] = (value, enc.start)

            if enc.kind == "emergency" or (enc.kind == "consult" and self.conditions & {"af", "cad", "hf"}):
                self.add_procedure(enc, "ecg")
            if "hf" in self.dx and self.dx["hf"].enc <= i and "echo" not in given:
                given.add("echo")
                self.add_procedure(enc, "echo")
            self.add_immunizations(enc, given, flu_blocks)
            for gene, (diplotype, phenotype, at) in sorted(self.genes.items()):
                if at == i:
                    self.add_genomic(enc, gene, diplotype, phenotype)
            if i in note_at:
                self.add_note(enc, note_at[i], results)

    def add_acute_visit(self) -> None:
        """An emergency visit still in progress, started at ``acute_start``: fever, fast breathing,
        low blood pressure and drowsiness (the acute scores' inputs), with amoxicillin ordered despite
        the recorded penicillin allergy. Written after the rest of the record and with fixed values
        (no draw from ``self.rng``), so everything else about the patient stays as it was."""
        start = self.acute_start
        enc = _Enc(index=len(self.encs), days_ago=0, start=start, end=start, kind="emergency", reason="",
                   practitioner=3 if self.site is GENERAL else 0, id=self.new_id("Encounter"))
        self.add_encounter(enc)
        encounter = self.entries[-1]["resource"]
        encounter["status"] = "in-progress"
        encounter["period"] = {"start": _ts(start)}
        encounter["reasonCode"] = [{"text": "Fever, cough and shortness of breath for two days; drowsy"}]
        systolic, diastolic = ACUTE_BP
        self.observation(enc, "vital-signs", VITALS["bp"], component=[
            {"code": _concept(LOINC, VITALS[k][0], VITALS[k][1]), "valueQuantity": self.quantity(v, "mm[Hg]")}
            for k, v in (("sbp", systolic), ("dbp", diastolic))
        ])
        for code, display, value, unit in ACUTE_VITALS:
            self.observation(enc, "vital-signs", (code, display, unit), valueQuantity=self.quantity(value, unit))
        rx = _Rx(key="amoxicillin", start=enc.index, reason="", id=self.new_id("MedicationRequest"))
        self.encs.append(enc)
        self.add_medication(rx)

    def add_organization(self) -> None:
        site = self.site
        self.add({
            "resourceType": "Organization",
            "id": site.organization_id,
            "identifier": [{"system": "urn:cdss:demo:organization", "value": site.code}],
            "active": True,
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                  "code": "prov", "display": "Healthcare Provider"}]}],
            "name": site.name,
        })

    def add_practitioner(self, index: int) -> None:
        given, family, specialty = self.site.practitioners[index]
        npi = uuid.uuid5(_NAMESPACE, f"npi/{self.site.code}/{index}").int % 10**5
        self.add({
            "resourceType": "Practitioner",
            "id": self.site.practitioner_id(index),
            "identifier": [{"system": NPI, "value": f"99990{npi:05d}"}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
            "qualification": [{"code": {"text": specialty}}],
        })

    def add_encounter(self, enc: _Enc) -> None:
        code, display, klass = ENCOUNTER_TYPES[enc.kind]
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": enc.id,
            "status": "finished",
            "class": {"system": ACT_CODE, "code": klass, "display": CLASS_DISPLAY[klass]},
            "type": [_concept(SNOMED, code, display)],
            "subject": self.subject,
            "participant": [{"individual": self.practitioner_ref(enc.practitioner)}],
            "period": {"start": _ts(enc.start), "end": _ts(enc.end)},
            "serviceProvider": _ref(self.site.organization_id, self.site.name),
        }
        if enc.reason:
            code, display, _ = CONDITIONS[enc.reason]
            resource["reasonCode"] = [_concept(SNOMED, code, display)]
        self.add(resource)

    def add_condition(self, dx: _Dx) -> None:
        key = dx.key.split("@")[0]
        code, display, _ = CONDITIONS[key]
        enc = self.encs[dx.enc]
        resolved = dx.abated is not None
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": dx.id,
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved" if resolved else "active"}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{"system": CONDITION_CATEGORY,
                                      "code": "encounter-diagnosis" if resolved else "problem-list-item",
                                      "display": "Encounter Diagnosis" if resolved else "Problem List Item"}]}],
            "code": _concept(SNOMED, code, display),
            "subject": self.subject,
            "encounter": _ref(enc.id),
            "onsetDateTime": _ts(dx.onset) if dx.enc else dx.onset.date().isoformat(),
            "recordedDate": _ts(enc.start),
            "recorder": self.practitioner_ref(enc.practitioner),
        }
        if dx.abated is not None:
            resource["abatementDateTime"] = _ts(dx.abated)
        self.add(resource)

    def add_allergy(self, key: str, enc: _Enc) -> None:
        code, display, category, criticality, reaction_code, reaction, _ = ALLERGIES[key]
        self.add({
            "resourceType": "AllergyIntolerance",
            "id": self.new_id("AllergyIntolerance"),
            "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": ALLERGY_VERIFICATION, "code": "confirmed"}]},
            "type": "allergy",
            "category": [category],
            "criticality": criticality,
            "code": _concept(SNOMED, code, display),
            "patient": self.subject,
            "recordedDate": _ts(enc.start),
            "reaction": [{"manifestation": [_concept(SNOMED, reaction_code, reaction)],
                          "severity": "severe" if criticality == "high" else "mild"}],
        })

    def add_medication(self, rx: _Rx) -> None:
        code, name, _, sig, prn = MEDICATIONS[rx.key]
        enc = self.encs[rx.start]
        validity: dict[str, str] = {"start": _ts(enc.start)}
        if rx.course_days:
            status = "completed"
            validity["end"] = _ts(enc.start + dt.timedelta(days=rx.course_days))
        elif rx.stop is not None:
            status = "stopped"
            validity["end"] = _ts(self.encs[rx.stop].start)
        else:
            status = "active"
        resource: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": rx.id,
            "status": status,
            "intent": "order",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                      "code": "community", "display": "Community"}]}],
            "medicationCodeableConcept": _concept(RXNORM, code, name),
            "subject": self.subject,
            "encounter": _ref(enc.id),
            "authoredOn": _ts(enc.start),
            "requester": self.practitioner_ref(enc.practitioner),
            "dosageInstruction": [{"sequence": 1, "text": sig, "asNeededBoolean": prn}],
            "dispenseRequest": {"validityPeriod": validity, "numberOfRepeatsAllowed": 0 if rx.course_days else 11},
        }
        reason = self.dx.get(rx.reason)
        if reason is not None:
            resource["reasonReference"] = [_ref(reason.id)]
        self.add(resource)

    def observation(self, enc: _Enc, category: str, loinc: tuple[str, str, str], **value: Any) -> dict[str, Any]:
        code, display, _ = loinc
        at = enc.start + dt.timedelta(minutes=10 if category == "vital-signs" else 25)
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.new_id("Observation"),
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category,
                                      "display": "Vital Signs" if category == "vital-signs" else "Laboratory"}]}],
            "code": _concept(LOINC, code, display),
            "subject": self.subject,
            "encounter": _ref(enc.id),
            "effectiveDateTime": _ts(at),
            "issued": _ts(at + (dt.timedelta(minutes=5) if category == "vital-signs" else dt.timedelta(hours=4))),
        }
        resource.update(value)
        self.add(resource)
        return resource

    @staticmethod
    def quantity(value: float, unit: str) -> dict[str, Any]:
        return {"value": value, "unit": unit, "system": UCUM, "code": unit}

    def add_vitals(self, enc: _Enc, v: dict[str, float]) -> None:
        self.observation(enc, "vital-signs", VITALS["bp"], component=[
            {"code": _concept(LOINC, VITALS[k][0], VITALS[k][1]), "valueQuantity": self.quantity(v[k], "mm[Hg]")}
            for k in ("sbp", "dbp")
        ])
        for key in ("hr", "height", "weight", "bmi"):
            self.observation(enc, "vital-signs", VITALS[key], valueQuantity=self.quantity(v[key], VITALS[key][2]))
        code, display = SMOKING_STATUS[self.smoking]
        smoking = self.observation(enc, "social-history", ("72166-2", "Tobacco smoking status", ""),
                                   valueCodeableConcept=_concept(SNOMED, code, display))
        smoking["category"][0]["coding"][0]["display"] = "Social History"

    def add_lab(self, enc: _Enc, key: str, value: float) -> None:
        self.observation(enc, "laboratory", LABS[key], valueQuantity=self.quantity(value, LABS[key][2]))

    def add_genomic(self, enc: _Enc, gene: str, diplotype: str, phenotype: str) -> None:
        hgnc = PGX[gene][0]
        self.observation(enc, "laboratory", (LOINC_VARIANT_ASSESSMENT, "Genetic variant assessment", ""), component=[
            {"code": _concept(LOINC, LOINC_GENE_STUDIED, "Gene studied [ID]"),
             "valueCodeableConcept": _concept(HGNC, hgnc, gene)},
            {"code": _concept(LOINC, LOINC_GENOTYPE_DISPLAY, "Genotype display name"),
             "valueCodeableConcept": {"text": diplotype}},
            {"code": _concept(LOINC, LOINC_PHENOTYPE, "Genetic variation's effect on drug metabolism"),
             "valueCodeableConcept": {"text": phenotype}},
        ])

    def add_procedure(self, enc: _Enc, key: str) -> None:
        code, display = PROCEDURES[key]
        self.add({
            "resourceType": "Procedure",
            "id": self.new_id("Procedure"),
            "status": "completed",
            "code": _concept(SNOMED, code, display),
            "subject": self.subject,
            "encounter": _ref(enc.id),
            "performedPeriod": {"start": _ts(enc.start + dt.timedelta(minutes=5)),
                                "end": _ts(enc.start + dt.timedelta(minutes=20))},
        })

    def add_immunizations(self, enc: _Enc, given: set[str], flu_blocks: set[int]) -> None:
        rng, age = self.rng, self.age_at(enc)
        block = (self.encs[0].days_ago - enc.days_ago) // 365
        doses = []
        if block not in flu_blocks and enc.kind != "emergency" and rng.random() < 0.7:
            flu_blocks.add(block)
            doses.append("flu")
        for key, eligible, p in (("td", True, 0.15), ("pcv13", age >= 65, 0.35), ("zoster", age >= 50, 0.2),
                                 ("covid", True, 0.15)):
            if key not in given and eligible and enc.kind != "emergency" and rng.random() < p:
                given.add(key)
                doses.append(key)
        for key in doses:
            code, display = VACCINES[key]
            self.add({
                "resourceType": "Immunization",
                "id": self.new_id("Immunization"),
                "status": "completed",
                "vaccineCode": _concept(CVX, code, display),
                "patient": self.subject,
                "encounter": _ref(enc.id),
                "occurrenceDateTime": _ts(enc.start + dt.timedelta(minutes=15)),
                "primarySource": True,
            })

    def add_note(self, enc: _Enc, kind: str, results: _Results) -> None:
        code, display = NOTE_TYPES[kind]
        text = _NoteWriter(self, enc, kind, results).text()
        author = self.practitioner_ref(enc.practitioner)
        self.add({
            "resourceType": "DocumentReference",
            "id": self.new_id("DocumentReference"),
            "status": "current",
            "docStatus": "final",
            "type": _concept(LOINC, code, display),
            "category": [{"coding": [{
                "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "code": "clinical-note", "display": "Clinical Note"}]}],
            "subject": self.subject,
            "date": _ts(enc.end),
            "author": [author],
            "custodian": _ref(self.site.organization_id, self.site.name),
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": base64.b64encode(text.encode()).decode("ascii"),
                                        "title": display}}],
            "context": {"encounter": [_ref(enc.id)], "period": {"start": _ts(enc.start), "end": _ts(enc.end)}},
        })


FAMILY_HISTORY = (
    "Father had a myocardial infarction at age 58.",
    "Mother has type 2 diabetes mellitus.",
    "Brother with hypertension.",
    "Mother died of breast cancer at age 67.",
    "Sister with asthma.",
    "No family history of premature coronary artery disease.",
    "Father had a stroke in his seventies.",
    "Maternal grandmother with colon cancer.",
)
SURGICAL_HISTORY = (
    "Appendectomy at age 24.",
    "Cholecystectomy in 2012.",
    "Right knee arthroscopy.",
    "Inguinal hernia repair.",
    "Tonsillectomy in childhood.",
)
OCCUPATIONS = ("teacher", "nurse", "electrician", "accountant", "bus driver", "software developer",
               "shop owner", "cook", "warehouse worker", "office manager")


class _NoteWriter:
    """Short notes in the usual sections, with the negations, family history and uncertainty a
    real note has (what the note pipeline must tell apart from the patient's own findings)."""

    def __init__(self, p: _PatientBuilder, enc: _Enc, kind: str, results: _Results) -> None:
        self.p, self.enc, self.kind, self.results = p, enc, kind, results
        self.rng = p.rng
        self.i = enc.index
        self.problems = [k for k in CHRONIC if p.has(k, self.i)]
        self.she = "She" if p.female else "He"
        self.her = "her" if p.female else "his"

    def text(self) -> str:
        sections = [
            ("Chief complaint", self.chief_complaint()),
            ("History of present illness", self.hpi()),
            ("Past medical history", self.pmh()),
            ("Family history", " ".join(self.p.family_history)),
            ("Social history", self.social()),
            ("Medications", self.medications()),
            ("Allergies", self.allergies()),
            ("Physical examination", self.exam()),
            ("Results", self.result_text()),
            ("Assessment and plan", self.plan()),
        ]
        return "\n\n".join(f"{title}:\n{body}" for title, body in sections if body) + "\n"

    def label(self, key: str) -> str:
        return CONDITIONS[key.split("@")[0]][2]

    def chief_complaint(self) -> str:
        enc = self.enc
        if enc.kind == "emergency":
            return ("Palpitations and light-headedness since this morning." if enc.reason == "af"
                    else "Worsening shortness of breath and leg swelling for four days.")
        if enc.kind == "symptom":
            return ("Nasal congestion and facial pressure for ten days." if enc.reason == "sinusitis"
                    else "Cough for one week.")
        if enc.kind == "consult":
            return f"Referred for evaluation of {self.label(enc.reason)}." if enc.reason else "Cardiology referral."
        if enc.kind == "followup" and enc.reason:
            return f"Follow-up of {self.label(enc.reason)}."
        return "Annual examination."

    def hpi(self) -> str:
        p, enc, rng = self.p, self.enc, self.rng
        who = f"{int(p.age_at(enc))}-year-old {'woman' if p.female else 'man'}"
        history = f" with a history of {_join([self.label(k) for k in self.problems])}" if self.problems else ""
        if enc.kind == "consult":
            reason = f"evaluation of {self.label(enc.reason)}" if enc.reason else "cardiology evaluation"
        else:
            complaint = self.chief_complaint()
            reason = complaint[0].lower() + complaint[1:-1]
        lines = [f"{who}{history} presents for {reason}."]
        if enc.kind == "emergency" and enc.reason == "af":
            lines.append(f"{self.she} reports a racing, irregular heartbeat. {self.she} denies chest pain or syncope.")
        elif enc.kind == "emergency":
            lines.append(f"{self.she} reports orthopnea and a weight gain of about 3 kg over the past week. "
                         f"{self.she} denies chest pain. Possible dietary indiscretion over the holidays.")
        elif enc.kind == "symptom" and enc.reason == "sinusitis":
            lines.append(f"{self.she} reports purulent nasal discharge. No fever. Denies shortness of breath.")
        elif enc.kind == "symptom":
            lines.append(f"Productive cough without fever. {self.she} denies chest pain and hemoptysis. "
                         "No recent travel.")
        else:
            if self.has("cad"):
                lines.append(f"{self.she} reports stable exertional chest tightness relieved by rest; "
                             "no chest pain at rest.")
            else:
                lines.append(f"{self.she} denies chest pain, shortness of breath, palpitations or leg swelling.")
            if self.has("hf"):
                lines.append(f"Dyspnea on exertion after one flight of stairs. {self.she} denies orthopnea.")
            if self.has("af"):
                lines.append("Occasional palpitations, no syncope.")
            if self.has("t2dm"):
                lines.append("No polyuria, polydipsia or hypoglycemic episodes.")
            if self.has("asthma"):
                lines.append("Uses the rescue inhaler about twice a week; no night-time symptoms.")
            if self.has("htn"):
                if p.controlled:
                    lines.append(f"{self.she} reports taking {self.her} medications as prescribed.")
                else:
                    lines.append(f"{self.she} admits to missing doses several times a week. Home blood pressure "
                                 "readings have been in the 150s systolic.")
        if rng.random() < 0.3:
            lines.append("No fever, chills or weight loss.")
        return " ".join(lines)

    def has(self, key: str) -> bool:
        return self.p.has(key, self.i)

    def pmh(self) -> str:
        items = [self.label(k).capitalize() + "." for k in self.problems]
        if self.has("old_mi"):
            items.append("History of myocardial infarction treated with a stent.")
        items += self.p.surgical_history
        return " ".join(items) or "No significant past medical history."

    def social(self) -> str:
        p = self.p
        smoking = {"never": "Never smoker.", "former": f"Former smoker, quit {p.rng.randint(3, 25)} years ago.",
                   "current": f"Current smoker, about {p.rng.randint(5, 40)} pack-years; counselled on cessation."}
        work = "Retired." if p.occupation == "retired" else f"Works as a {p.occupation}."
        return f"{smoking[p.smoking]} Drinks alcohol {p.rng.choice(('rarely', 'socially', 'two to three times a week'))}. {work}"

    def medications(self) -> str:
        meds = [r for r in self.p.active_meds(self.i) if r.start < self.i or self.i == 0]
        if not meds:
            return "None."
        return "\n".join(f"- {MEDICATIONS[r.key][2]}: {MEDICATIONS[r.key][3]}" for r in meds)

    def allergies(self) -> str:
        if not self.p.allergies:
            return "No known drug allergies."
        return _sentence(_join([f"{ALLERGIES[k][6]} ({ALLERGIES[k][5].lower()})" for k in sorted(self.p.allergies)]))

    def exam(self) -> str:
        v = self.results.vitals
        line = (f"BP {v['sbp']:.0f}/{v['dbp']:.0f} mmHg, HR {v['hr']:.0f}/min, weight {v['weight']} kg, "
                f"BMI {v['bmi']} kg/m2.")
        rhythm = "irregularly irregular rhythm" if self.has("af") else "regular rate and rhythm"
        heart = f"Heart: {rhythm}, no murmurs."
        if self.enc.kind == "emergency" and self.enc.reason == "hf":
            lungs, legs = "Lungs: bibasilar crackles.", "Extremities: 2+ pitting edema to mid-shin."
        elif self.enc.kind == "symptom" and self.enc.reason == "bronchitis":
            lungs, legs = "Lungs: scattered rhonchi, no wheezing.", "Extremities: no edema."
        else:
            lungs, legs = "Lungs: clear to auscultation.", "Extremities: no edema."
        return " ".join((line, heart, lungs, legs))

    def result_text(self) -> str:
        names = {"a1c": ("HbA1c", "%"), "ldl": ("LDL", "mg/dL"), "creat": ("creatinine", "mg/dL"),
                 "egfr": ("eGFR", "mL/min/1.73m2"), "k": ("potassium", "mmol/L"), "inr": ("INR", "")}
        parts = [f"{label} {self.results.labs[key][0]:g} {unit}".strip()
                 for key, (label, unit) in names.items() if key in self.results.labs]
        genes = [f"{g} {d} ({ph.lower()})" for g, (d, ph, at) in sorted(self.p.genes.items()) if at <= self.i]
        if genes:
            parts.append("pharmacogenomic testing: " + ", ".join(genes))
        return _sentence(_join(parts)) if parts else ""

    def plan(self) -> str:
        p, i, v, labs = self.p, self.i, self.results.vitals, self.results.labs
        items: list[str] = []
        on = [MEDICATIONS[r.key][2] for r in p.active_meds(i)]

        def meds_for(reason: str) -> str:
            names = [MEDICATIONS[r.key][2] for r in p.active_meds(i) if r.reason == reason]
            return _join(names) if names else "lifestyle measures"

        if self.enc.kind == "emergency" and self.enc.reason == "af":
            items.append("Atrial fibrillation with rapid ventricular response. Rate control with metoprolol; "
                         "telemetry; rule out thyroid disease.")
        if self.enc.kind == "emergency" and self.enc.reason == "hf":
            items.append("Acute on chronic heart failure. IV furosemide, daily weights, fluid restriction.")
        if self.enc.kind == "symptom":
            key = self.enc.reason
            if any(r.reason == f"{key}@{i}" for r in p.rx):
                items.append(f"Acute {self.label(key)}, symptoms over ten days. Start amoxicillin-clavulanate "
                             "for 7 days.")
            else:
                items.append(f"Acute {self.label(key)}, probably viral. Supportive care; antibiotics not "
                             "indicated at this time.")
        if self.has("htn"):
            goal = "at goal" if v["sbp"] < 140 and v["dbp"] < 90 else "above goal"
            items.append(f"Hypertension, {goal} (BP {v['sbp']:.0f}/{v['dbp']:.0f}). Continue {meds_for('htn')}."
                         + ("" if goal == "at goal" else " Home blood pressure monitoring; recheck in 4 weeks."))
        if self.has("t2dm"):
            a1c = f", HbA1c {labs['a1c'][0]:g} %" if "a1c" in labs else ""
            items.append(f"Type 2 diabetes mellitus{a1c}. Continue {meds_for('t2dm')}. Reinforced diet and "
                         "exercise; annual eye and foot examination.")
        if self.has("prediabetes"):
            items.append("Prediabetes. Lifestyle counselling; repeat HbA1c in one year.")
        if self.has("hld"):
            ldl = f", LDL {labs['ldl'][0]:g} mg/dL" if "ldl" in labs else ""
            items.append(f"Hyperlipidemia{ldl}. Continue {meds_for('hld')}.")
        if self.has("cad"):
            items.append(f"Coronary artery disease, stable. Continue {meds_for('cad')}.")
        if self.has("af"):
            inr = f" INR {labs['inr'][0]:g}, target 2.0-3.0." if "inr" in labs and "warfarin" in " ".join(on) else ""
            items.append(f"Atrial fibrillation. Stroke risk reviewed; continue {meds_for('af')}.{inr}")
        if self.has("hf") and not (self.enc.kind == "emergency" and self.enc.reason == "hf"):
            items.append("Heart failure with reduced ejection fraction, NYHA class II. Continue "
                         f"{meds_for('hf')}; daily weights; low-salt diet.")
        if self.has("ckd3"):
            egfr = f", eGFR {labs['egfr'][0]:g}" if "egfr" in labs else ""
            items.append(f"Chronic kidney disease stage 3{egfr}. Avoid NSAIDs; monitor potassium and creatinine.")
        if self.has("asthma"):
            items.append(f"Asthma, well controlled. Continue {meds_for('asthma')}.")
        if self.has("oa_knee"):
            items.append(f"Osteoarthritis of the knee. Continue {meds_for('oa_knee')}; physiotherapy referral.")
        if "obesity" in p.conditions:
            items.append(f"Obesity, BMI {v['bmi']}. Discussed weight management. Possible obstructive sleep "
                         "apnea; consider a sleep study.")
        if p.smoking == "current":
            items.append("Tobacco use. Cessation advised; offered nicotine replacement.")
        if not items:
            items.append("Healthy adult. Age-appropriate screening discussed.")
        if self.enc.kind == "emergency":
            follow = "Admitted to the cardiology ward for monitoring."
        else:
            follow = "Return in 3 months." if self.problems else "Return in one year."
        return "\n".join(f"{n}. {item}" for n, item in enumerate(items, start=1)) + f"\n{follow}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def bundle_counts(bundle: dict[str, Any]) -> Counter[str]:
    """Resources per type in a bundle (for tests and the command's summary)."""
    return Counter(e["resource"]["resourceType"] for e in bundle["entry"])


def _race_extension(patient_id: str) -> dict[str, Any]:
    rng = random.Random(f"race:{patient_id}")  # noqa: S311 - made-up data, not secrets
    code, display, _ = rng.choices(RACES, weights=[w for _, _, w in RACES])[0]
    return {
        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "extension": [{"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238",
                                                             "code": code, "display": display}},
                      {"url": "text", "valueString": display}],
    }

"""From a patient's record to calculator inputs (pure Python, no Django).

``RecordSnapshot`` is a plain copy of what the calculators may use; ``inputs_for`` maps it to one
calculator's inputs, each with its value, unit, date and source row, and lists what is missing.
Nothing is guessed: a laboratory value or a smoking status that is not in the record within its
look-back window is missing. A diagnosis or a medication, by contrast, is a fact of the problem
list and medication list: when none matches, the input is False and says so.

The acute scores' bedside inputs come from coded observations of the last 24 hours (see
``_acute_input``): altered mentation and NEWS2 consciousness from the Glasgow Coma Scale total,
supplemental oxygen from the inhaled oxygen flow rate or concentration. With none of them
recorded the input is missing (no observation of air is not an observation of air).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .calculators import Calculator
from .calculators.base import convert

LOINC = "http://loinc.org"


@dataclass(frozen=True)
class ObservationValue:
    code: str
    value: float | None
    unit: str
    at: dt.datetime
    source_id: int | str  # a stored row's id, or a prefetched resource's FHIR id
    value_code: str = ""


@dataclass(frozen=True)
class CodedFact:
    system: str
    code: str
    display: str
    source_id: int | str


@dataclass
class RecordSnapshot:
    patient_id: int
    birth_date: dt.date | None
    sex: str
    race: str | None
    # latest value per LOINC code (already limited to the longest look-back window)
    observations: dict[str, ObservationValue] = field(default_factory=dict)
    conditions: list[CodedFact] = field(default_factory=list)
    medications: list[CodedFact] = field(default_factory=list)


@dataclass(frozen=True)
class QuantitySource:
    codes: tuple[str, ...]
    dimension: str
    lookback_days: int


# LOINC codes per input; look-back windows: chronic-risk labs 2 years (lipids), 1 year for
# BP, BMI, kidney and liver labs; acute vital signs 24 hours.
QUANTITY_SOURCES: dict[str, QuantitySource] = {
    "total_cholesterol": QuantitySource(("2093-3",), "cholesterol", 730),
    "hdl_cholesterol": QuantitySource(("2085-9",), "cholesterol", 730),
    "systolic_bp": QuantitySource(("8480-6",), "pressure", 365),
    "diastolic_bp": QuantitySource(("8462-4",), "pressure", 365),
    "bmi": QuantitySource(("39156-5",), "bmi", 365),
    "waist": QuantitySource(("8280-0", "56086-2", "56115-9"), "length", 365),
    "egfr": QuantitySource(("98979-8", "62238-1", "33914-3", "48642-3", "48643-1"), "egfr", 365),
    "creatinine": QuantitySource(("2160-0", "38483-4"), "creatinine", 90),
    "bilirubin": QuantitySource(("1975-2", "42719-5"), "bilirubin", 90),
    "inr": QuantitySource(("6301-6", "34714-6"), "ratio", 90),
    "sodium": QuantitySource(("2951-2", "2947-0"), "sodium", 90),
    "albumin": QuantitySource(("1751-7", "61151-7"), "albumin", 90),
    "bun": QuantitySource(("3094-0", "6299-2"), "bun", 90),
}
MODEL_SOURCES: dict[str, QuantitySource] = {
    "fasting_glucose": QuantitySource(("1558-6",), "glucose", 365),
}
ACUTE_SOURCES: dict[str, QuantitySource] = {
    "respiratory_rate": QuantitySource(("9279-1",), "rate", 1),
    "heart_rate": QuantitySource(("8867-4",), "rate", 1),
    "temperature": QuantitySource(("8310-5", "8331-1"), "temperature", 1),
    "spo2": QuantitySource(("59408-5", "2708-6"), "percent", 1),
}
ALL_SOURCES = {**QUANTITY_SOURCES, **MODEL_SOURCES, **ACUTE_SOURCES}
SMOKING_STATUS = "72166-2"
# Tobacco smoking status answers (SNOMED CT and LOINC answer codes) meaning "smokes now".
CURRENT_SMOKER = frozenset({"449868002", "428041000124106", "77176002", "65568007", "428071000124103",
                            "LA18976-3", "LA18977-1", "LA18981-3", "LA18982-1"})
NON_SMOKER = frozenset({"266919005", "8517006", "LA18978-9", "LA15920-4"})


# Bedside observations of the acute scores (LOINC), read within ACUTE_WINDOW like the vital signs.
GCS_TOTAL = "9269-2"  # Glasgow coma score total (3-15)
OXYGEN_FLOW = "3151-8"  # Inhaled oxygen flow rate (L/min)
OXYGEN_FRACTION = "3150-0"  # Inhaled oxygen concentration (FiO2, % or a fraction 0.21-1)
ACUTE_CODED = (GCS_TOTAL, OXYGEN_FLOW, OXYGEN_FRACTION)
ACUTE_WINDOW = dt.timedelta(days=1)
# ICD-10-CM respiratory failure "with hypercapnia" (J96.02 acute, J96.12 chronic, J96.22 acute on
# chronic, J96.92 unspecified): the patients for whom NEWS2 SpO2 Scale 2 may have been prescribed.
HYPERCAPNIC_FAILURE_ICD = ("J96.02", "J96.12", "J96.22", "J96.92")
# SNOMED CT 65710008 "Acute respiratory failure" is not enough: only the hypercapnic kind counts.
NEWS2_SCALE_SOURCE = (
    "RCP NEWS2 2017, Chart 1: SpO2 Scale 1 unless a clinician has prescribed a target range of 88-92% "
    "(Scale 2, e.g. hypercapnic respiratory failure); no hypercapnic respiratory failure on the problem list"
)


def observation_codes() -> set[str]:
    codes = {code for source in ALL_SOURCES.values() for code in source.codes}
    return codes | {SMOKING_STATUS, *ACUTE_CODED}


def max_lookback_days() -> int:
    return max(s.lookback_days for s in ALL_SOURCES.values()) + 365  # smoking status: 3 years


# Condition value sets: SNOMED CT codes and ICD-10-CM prefixes. The decision-support value sets
# will replace these lists; they are data, kept small and explicit here.
CONDITION_SETS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "diabetes": (frozenset({"44054006", "46635009", "73211009", "190330002", "313436004", "368581000119106"}),
                 ("E10", "E11", "E13")),
    "hypertension": (frozenset({"38341003", "59621000", "1201005", "10725009"}), ("I10", "I11", "I12", "I13", "I15")),
    "congestive_heart_failure": (frozenset({"84114007", "42343007", "88805009", "85232009", "703272007"}), ("I50",)),
    "stroke_tia_thromboembolism": (frozenset({"230690007", "266257000", "422504002", "432504007", "275526006"}),
                                   ("I63", "I64", "G45", "I74", "Z86.73")),
    "vascular_disease": (frozenset({"22298006", "399211009", "401303003", "401314000", "399957001", "53741008",
                                    "414545008"}), ("I21", "I22", "I25.2", "I70", "I73.9")),
    "atrial_fibrillation": (frozenset({"49436004", "282825002", "426749004", "440059007"}), ("I48",)),
    "chronic_liver_disease": (frozenset({"19943007", "235856003", "197321007", "266468003"}),
                              ("K70", "K71", "K72", "K73", "K74", "K76")),
    "pneumonia": (frozenset({"233604007", "385093006", "233607000", "53084003"}), ("J12", "J13", "J14", "J15",
                                                                                 "J16", "J17", "J18")),
}
# Medication value sets by ingredient name in the RxNorm display (SCD names start with it).
MEDICATION_SETS: dict[str, tuple[str, ...]] = {
    "statin": ("atorvastatin", "simvastatin", "rosuvastatin", "pravastatin", "lovastatin", "fluvastatin",
               "pitavastatin"),
    "bp_treated": ("lisinopril", "enalapril", "ramipril", "captopril", "benazepril", "quinapril", "perindopril",
                   "losartan", "valsartan", "irbesartan", "candesartan", "olmesartan", "telmisartan", "amlodipine",
                   "nifedipine", "felodipine", "diltiazem", "verapamil", "hydrochlorothiazide", "chlorthalidone",
                   "indapamide", "metoprolol", "atenolol", "bisoprolol", "carvedilol", "propranolol", "nebivolol",
                   "spironolactone", "eplerenone", "hydralazine", "clonidine", "doxazosin", "furosemide"),
}


def _condition_match(facts: Iterable[CodedFact], key: str) -> CodedFact | None:
    snomed, icd_prefixes = CONDITION_SETS[key]
    for fact in facts:
        if fact.code in snomed or (fact.system.endswith("icd-10-cm") and fact.code.startswith(icd_prefixes)):
            return fact
    return None


def _medication_match(facts: Iterable[CodedFact], key: str) -> CodedFact | None:
    names = MEDICATION_SETS[key]
    for fact in facts:
        display = fact.display.lower()
        if any(name in display for name in names):
            return fact
    return None


@dataclass
class InputValue:
    value: Any
    unit: str = ""
    at: str | None = None
    source: str = ""  # e.g. "Observation:123", "Condition:9", "Patient", "no matching active condition"
    note: str = ""  # how a derived input was read from its source ("Glasgow Coma Scale 14 < 15")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value}
        if self.unit:
            out["unit"] = self.unit
        if self.at:
            out["at"] = self.at
        out["source"] = self.source
        if self.note:
            out["note"] = self.note
        return out


class _Unreadable(ValueError):
    """A recorded value that cannot give the input (reported as a problem, never guessed)."""


class _Unknown(LookupError):
    """An optional input whose usual value the record contradicts: listed as missing."""


@dataclass
class MappedInputs:
    values: dict[str, InputValue]
    missing: list[str]
    problems: dict[str, str]

    def raw(self) -> dict[str, Any]:
        """The calculator's inputs: quantities as "value unit" strings (the calculator converts)."""
        out: dict[str, Any] = {}
        for name, item in self.values.items():
            out[name] = f"{item.value} {item.unit}" if item.unit else item.value
        return out


def applicable(calculator: str, snapshot: RecordSnapshot, as_of: dt.datetime) -> bool:
    """Whether a calculator applies to this patient at all (its clinical context)."""
    if calculator in ("cha2ds2_vasc", "has_bled"):
        return _condition_match(snapshot.conditions, "atrial_fibrillation") is not None
    if calculator in ("meld_na", "meld_3"):
        return _condition_match(snapshot.conditions, "chronic_liver_disease") is not None
    if calculator == "curb65":
        return _condition_match(snapshot.conditions, "pneumonia") is not None
    if calculator in ("qsofa", "news2"):
        # acute scores: only with vital signs from the last 24 hours
        return _fresh(snapshot, "respiratory_rate", as_of) is not None
    # Wells needs the clinician's judgement ("PE most likely"): never derived from the record.
    return calculator != "wells_pe"


# Scores of the patient's state now: every vital sign they read (blood pressure included, whose
# chronic-risk look-back is a year) must be from the last 24 hours.
ACUTE_SCORES = frozenset({"qsofa", "news2"})


def _fresh(snapshot: RecordSnapshot, name: str, as_of: dt.datetime, *, acute: bool = False) -> ObservationValue | None:
    source = ALL_SOURCES[name]
    window = ACUTE_WINDOW if acute else dt.timedelta(days=source.lookback_days)
    best: ObservationValue | None = None
    for code in source.codes:
        obs = snapshot.observations.get(code)
        if obs is None or obs.value is None or obs.at > as_of or as_of - obs.at > window:
            continue
        if best is None or obs.at > best.at:
            best = obs
    return best


def _age(snapshot: RecordSnapshot, as_of: dt.datetime) -> int | None:
    born = snapshot.birth_date
    if born is None:
        return None
    day = as_of.date()
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def inputs_for(calculator: Calculator, snapshot: RecordSnapshot, as_of: dt.datetime) -> MappedInputs:
    values: dict[str, InputValue] = {}
    missing: list[str] = []
    problems: dict[str, str] = {}
    for param in calculator.params:
        name = param.name
        try:
            item = _input_value(name, snapshot, as_of, acute=calculator.name in ACUTE_SCORES)
        except _Unreadable as exc:
            problems[name] = str(exc)
            continue
        except _Unknown:
            missing.append(name)
            continue
        if item is None:
            if param.required:
                missing.append(name)
            continue
        if param.kind == "quantity" and item.unit:
            try:
                convert(f"{item.value} {item.unit}", param.dimension)
            except ValueError as exc:
                problems[name] = f"recorded unit cannot be used: {exc}"
                continue
        values[name] = item
    return MappedInputs(values=values, missing=missing, problems=problems)


def _input_value(name: str, snapshot: RecordSnapshot, as_of: dt.datetime, *, acute: bool = False) -> InputValue | None:
    if name == "age":
        age = _age(snapshot, as_of)
        return None if age is None else InputValue(age, "a", None, "Patient.birthDate")
    if name == "sex":
        return InputValue(snapshot.sex, source="Patient.gender") if snapshot.sex in ("female", "male") else None
    if name == "race":
        return InputValue(snapshot.race, source="Patient.extension us-core-race") if snapshot.race else None
    if name in ALL_SOURCES:
        obs = _fresh(snapshot, name, as_of, acute=acute)
        if obs is None:
            return None
        return InputValue(round(obs.value, 6) if obs.value is not None else None, obs.unit, obs.at.isoformat(),
                          f"Observation:{obs.source_id}")
    if name == "smoker":
        obs = snapshot.observations.get(SMOKING_STATUS)
        if obs is None or obs.at > as_of or as_of - obs.at > dt.timedelta(days=3 * 365):
            return None
        if obs.value_code in CURRENT_SMOKER:
            return InputValue(True, at=obs.at.isoformat(), source=f"Observation:{obs.source_id}")
        if obs.value_code in NON_SMOKER:
            return InputValue(False, at=obs.at.isoformat(), source=f"Observation:{obs.source_id}")
        return None  # an answer we cannot read is missing, not guessed
    if name in ("altered_mentation", "consciousness", "on_oxygen", "spo2_scale"):
        return _acute_input(name, snapshot, as_of)
    if name in CONDITION_SETS:
        fact = _condition_match(snapshot.conditions, name)
        if fact is None:
            return InputValue(False, source="no matching active condition")
        return InputValue(True, source=f"Condition:{fact.source_id}")
    if name in MEDICATION_SETS:
        med = _medication_match(snapshot.medications, name)
        if med is None:
            return InputValue(False, source="no matching active medication")
        return InputValue(True, source=f"MedicationRequest:{med.source_id}")
    return None  # questionnaire items (FINDRISC lifestyle, Wells judgement...) are not in the record


def _recent(snapshot: RecordSnapshot, code: str, as_of: dt.datetime) -> ObservationValue | None:
    obs = snapshot.observations.get(code)
    if obs is None or obs.value is None or obs.at > as_of or as_of - obs.at > ACUTE_WINDOW:
        return None
    return obs


def _gcs(snapshot: RecordSnapshot, as_of: dt.datetime) -> ObservationValue | None:
    obs = _recent(snapshot, GCS_TOTAL, as_of)
    if obs is not None and (obs.value is None or not 3 <= obs.value <= 15 or obs.value != int(obs.value)):
        raise _Unreadable(f"Glasgow Coma Scale total {obs.value} is not a whole number from 3 to 15")
    return obs


def _oxygen(obs: ObservationValue) -> tuple[bool, str]:
    """On supplemental oxygen from one flow rate or FiO2 observation, with how it was read."""
    assert obs.value is not None
    unit = obs.unit.strip()
    if obs.code == OXYGEN_FLOW:
        factor = {"L/min": 1.0, "l/min": 1.0, "L/min{O2}": 1.0, "mL/min": 0.001, "ml/min": 0.001}.get(unit)
        if factor is None or obs.value < 0:
            raise _Unreadable(f"inhaled oxygen flow rate in {unit!r} cannot be read (L/min or mL/min)")
        litres = obs.value * factor
        return litres > 0, f"inhaled oxygen flow {litres:g} L/min ({'> 0: on oxygen' if litres > 0 else '0: air'})"
    # FiO2: percent, or a fraction written with unit "1" (UCUM) or none
    if unit == "%":
        percent = obs.value
    elif unit in ("1", "", "{fraction}", "{ratio}") and obs.value <= 1:
        percent = obs.value * 100
    else:
        raise _Unreadable(f"inhaled oxygen concentration {obs.value} {unit!r} cannot be read (% or a fraction <= 1)")
    if not 21 <= percent <= 100:
        raise _Unreadable(f"inhaled oxygen concentration {percent:g}% is outside 21-100%")
    on = percent > 21
    return on, f"FiO2 {percent:g}% ({'> 21%: on oxygen' if on else '21%: air'})"


def _acute_input(name: str, snapshot: RecordSnapshot, as_of: dt.datetime) -> InputValue | None:
    """qSOFA's altered mentation and NEWS2's consciousness, supplemental oxygen and SpO2 scale.

    * Altered mentation (Seymour et al., JAMA 2016: Glasgow Coma Scale < 15): GCS total (LOINC
      9269-2) < 15 True, 15 False.
    * Consciousness (RCP NEWS2 2017, Chart 1: Alert 0 points; new Confusion, Voice, Pain or
      Unresponsive 3 points): from the GCS total, 15 "A"; below 15 the patient is not alert, which
      scores 3 whichever of C, V, P or U it is; the record does not say which, so it is entered as
      "C" and the note says so. No LOINC code for ACVPU with a published answer list is in common
      use, so none is read.
    * Supplemental oxygen (Chart 1: air 0, oxygen 2 points): the latest of inhaled oxygen flow rate
      (LOINC 3151-8, > 0 L/min) and inhaled oxygen concentration (LOINC 3150-0, FiO2 > 21%; a
      fraction such as 0.4 is read as 40%). With neither in the last 24 hours it is missing.
    * SpO2 scale: 1, the chart's scale for every patient not prescribed a target of 88-92% (Scale
      2); where hypercapnic respiratory failure is on the problem list a clinician may have
      prescribed Scale 2, which the record does not say, so the scale is missing.
    """
    if name in ("altered_mentation", "consciousness"):
        gcs = _gcs(snapshot, as_of)
        if gcs is None:
            return None
        assert gcs.value is not None
        score = int(gcs.value)
        at, source = gcs.at.isoformat(), f"Observation:{gcs.source_id}"
        if name == "altered_mentation":
            return InputValue(score < 15, at=at, source=source,
                              note=f"Glasgow Coma Scale {score} ({'< 15: altered' if score < 15 else '15: not altered'})")
        if score == 15:
            return InputValue("A", at=at, source=source, note="Glasgow Coma Scale 15: alert")
        return InputValue("C", at=at, source=source,
                          note=f"Glasgow Coma Scale {score} < 15: not alert; RCP NEWS2 2017 Chart 1 scores C, V, P "
                               "and U alike (3 points); which of them applies is not recorded")
    if name == "on_oxygen":
        found = [o for o in (_recent(snapshot, OXYGEN_FLOW, as_of), _recent(snapshot, OXYGEN_FRACTION, as_of))
                 if o is not None]
        if not found:
            return None
        latest = max(found, key=lambda o: o.at)
        on, how = _oxygen(latest)
        return InputValue(on, at=latest.at.isoformat(), source=f"Observation:{latest.source_id}", note=how)
    # spo2_scale
    for fact in snapshot.conditions:
        if fact.system.endswith("icd-10-cm") and fact.code.startswith(HYPERCAPNIC_FAILURE_ICD):
            raise _Unknown(name)
    return InputValue(1, source=NEWS2_SCALE_SOURCE)


def heart_disease_features(snapshot: RecordSnapshot, as_of: dt.datetime, names: Iterable[str]) -> MappedInputs:
    """The Cleveland heart-disease model's inputs that a record holds: age, sex, resting systolic
    pressure (``trestbps``), total cholesterol (``chol``) and fasting glucose > 120 mg/dL (``fbs``).
    Chest-pain type, resting ECG, exercise-test and fluoroscopy/scintigraphy results have no coded
    source in the record and are listed as missing."""
    values: dict[str, InputValue] = {}
    age = _age(snapshot, as_of)
    if age is not None:
        values["age"] = InputValue(age, "a", None, "Patient.birthDate")
    if snapshot.sex in ("female", "male"):
        values["sex"] = InputValue(1 if snapshot.sex == "male" else 0, source="Patient.gender")
    for name, source_name, dimension in (("trestbps", "systolic_bp", "pressure"),
                                         ("chol", "total_cholesterol", "cholesterol")):
        obs = _fresh(snapshot, source_name, as_of)
        if obs is not None and obs.value is not None:
            try:
                number = convert(f"{obs.value} {obs.unit}", dimension)
            except ValueError:
                continue
            unit = "mm[Hg]" if dimension == "pressure" else "mg/dL"
            values[name] = InputValue(round(number, 3), unit, obs.at.isoformat(), f"Observation:{obs.source_id}")
    glucose = _fresh(snapshot, "fasting_glucose", as_of)
    if glucose is not None and glucose.value is not None:
        try:
            mg_dl = convert(f"{glucose.value} {glucose.unit}", "glucose")
        except ValueError:
            mg_dl = None
        if mg_dl is not None:
            values["fbs"] = InputValue(int(mg_dl > 120), at=glucose.at.isoformat(),
                                       source=f"Observation:{glucose.source_id}")
    missing = [name for name in names if name not in values]
    return MappedInputs(values=values, missing=missing, problems={})

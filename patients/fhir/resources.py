"""Facts about FHIR R4 resource types (pure data; no Django)."""

from __future__ import annotations

# Every resource type of FHIR R4 (4.0.1), from https://hl7.org/fhir/R4/resourcelist.html.
R4_RESOURCE_TYPES = frozenset(
    """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
    CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse
    ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest
    DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis
    Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence
    EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal
    GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice
    Library Linkage List Location Measure MeasureReport Media Medication MedicationAdministration
    MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductIndication
    MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical MedicinalProductUndesirableEffect
    MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization OrganizationAffiliation
    Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner
    PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject
    RiskAssessment RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen
    SpecimenDefinition StructureDefinition StructureMap Subscription Substance
    SubstanceNucleicAcid SubstancePolymer SubstanceProtein SubstanceReferenceInformation
    SubstanceSourceMaterial SubstanceSpecification SupplyDelivery SupplyRequest Task
    TerminologyCapabilities TestReport TestScript ValueSet VerificationResult VisionPrescription
    """.split()
)

# Financial resources: never stored, counted as "billing".
BILLING_TYPES = frozenset(
    {
        "Claim",
        "ClaimResponse",
        "ExplanationOfBenefit",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "PaymentNotice",
        "PaymentReconciliation",
        "Account",
        "ChargeItem",
        "Invoice",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "InsurancePlan",
    }
)

# Types stored by the importer, in the order they are written (referenced before referencing).
STORED_TYPES = (
    "Organization",
    "Practitioner",
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
    "Procedure",
    "Immunization",
    "DocumentReference",
    "DiagnosticReport",
)

# Read inside a bundle to complete other resources (MedicationRequest.medicationReference).
SUPPORTING_TYPES = frozenset({"Medication"})

SUPPORTED_BUNDLE_TYPES = frozenset({"transaction", "batch", "collection", "searchset", "transaction-response", "batch-response"})

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"

# Genomics reporting (HL7 Genomics Reporting IG) component codes.
LOINC_GENE_STUDIED = "48018-6"
LOINC_GENOTYPE_DISPLAY = "84413-4"
LOINC_PHENOTYPE_CODES = frozenset({"53040-2", "79716-7"})
HGNC = "http://www.genenames.org"
# Pharmacogenes (CPIC gene list, 2024) and HLA alleles, as a gene is named in an Observation's
# code (HGNC symbol). A plain pattern (no \b) so the same text runs in PostgreSQL's regex too.
PGX_GENES = (r"(HLA-[ABC]\*[0-9]{2}:[0-9]{2}|CYP2C19|CYP2C9|CYP2D6|CYP2B6|CYP3A5|CYP4F2|SLCO1B1|DPYD|TPMT|NUDT15|"
             r"UGT1A1|VKORC1|G6PD|IFNL3|RYR1|CACNA1S|CFTR|MT-RNR1|ABCG2)")

-- Safety screening (issue 13): the questions each clinic asks before a session, as data, and the
-- patients' yes/no answers, append-only (a re-confirmation is a new row, never an update).

-- The questions of one clinic. `applies_to`: treatment codes the question is asked for; NULL:
-- every treatment. Seeded with the defaults of shared/domain/screening.py when a clinic is made
-- (and below for the clinics that exist already); edited through the admin API.
CREATE TABLE screening_question (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id   bigint  NOT NULL REFERENCES clinic (id),
    code        text    NOT NULL CHECK (code ~ '^[a-z][a-z0-9_]{0,49}$'),
    wording     text    NOT NULL CHECK (length(wording) BETWEEN 1 AND 500),
    applies_to  text[],
    position    integer NOT NULL DEFAULT 0,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (clinic_id, code)
);

-- Every answer a patient gave (or staff recorded for them). `appointment_id`: the session it was
-- given for (NULL: asked of the patient, not for one session).
CREATE TABLE screening_answer (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic_id      bigint  NOT NULL REFERENCES clinic (id),
    patient_id     bigint  NOT NULL REFERENCES patient (id),
    appointment_id bigint  REFERENCES appointment (id),
    question_code  text    NOT NULL,
    answer         boolean NOT NULL,
    details        text    NOT NULL DEFAULT '' CHECK (length(details) <= 2000),
    answered_at    timestamptz NOT NULL,
    source         text    NOT NULL CHECK (source IN (
                       'public_form', 'public_api', 'staff', 'check_in', 'pre_visit')),
    actor          text    NOT NULL
);
-- History: written once, never changed (as 0006_app_role.sql asks of every append-only table).
REVOKE UPDATE, DELETE ON screening_answer FROM regimen_app;
CREATE TRIGGER screening_answer_append_only BEFORE UPDATE OR DELETE ON screening_answer
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER screening_answer_no_truncate BEFORE TRUNCATE ON screening_answer
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE INDEX screening_answer_patient_idx
    ON screening_answer (patient_id, question_code, answered_at DESC);
CREATE INDEX screening_answer_appointment_idx
    ON screening_answer (appointment_id) WHERE appointment_id IS NOT NULL;

-- The defaults for clinics made before this migration (the same as shared/domain/screening.py).
INSERT INTO screening_question (clinic_id, code, wording, applies_to, position, created_at,
                                updated_at)
SELECT c.id, d.code, d.wording, d.applies_to, d.position, now(), now()
FROM clinic c CROSS JOIN (VALUES
    ('allergy', 'Are you allergic to any medicine, to local anaesthetics such as lidocaine, or to vitamins?', NULL::text[], 1),
    ('blood_thinners_or_nsaids', 'Do you take blood thinners (such as warfarin, apixaban, rivaroxaban, clopidogrel or aspirin) or anti-inflammatory painkillers (such as ibuprofen)?', NULL, 2),
    ('bleeding_disorder', 'Do you have a bleeding or clotting disorder?', NULL, 3),
    ('pregnant_or_breastfeeding', 'Are you pregnant or breast-feeding?', NULL, 4),
    ('scalp_infection_or_fever', 'Do you have an infection of the scalp or a fever at the moment?', NULL, 5),
    ('immunosuppressed', 'Is your immune system weakened by an illness or by medicines (such as steroids or chemotherapy)?', NULL, 6),
    ('keloid_history', 'Have you ever had keloid scars (raised scars that grow beyond a wound)?', ARRAY['scalp-microneedling'], 7),
    ('isotretinoin', 'Do you take isotretinoin (such as Roaccutane), or have you taken it recently?', NULL, 8)
) AS d (code, wording, applies_to, position);

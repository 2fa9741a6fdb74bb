-- A row trigger's WHEN condition is prepared again for every statement that writes the table,
-- and an SQL-language function called in it is inlined then, which parses and analyses the
-- function's body each time. The quota triggers' conditions called ff_quota_hold four times,
-- so every claim and completion paid for four parses even where no quota is in use. Their
-- conditions now call one PL/pgSQL function (compiled once per session) that works out the
-- holds itself; they still answer false, so the triggers never queue an event.

-- Notes the change of what a row holds of its quota policy (from the old row's columns to the
-- new row's; an inserted row held nothing), when it changed; answers false.
CREATE FUNCTION ff_note_quota_hold_change(p_policy uuid, p_key text, p_id uuid,
                                          p_old_phase ff_lifecycle_phase, p_old_eligibility ff_eligibility_state,
                                          p_old_wait text, p_new_phase ff_lifecycle_phase,
                                          p_new_eligibility ff_eligibility_state, p_new_wait text)
    RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_from integer := CASE WHEN p_old_phase IS NULL THEN 0
                           ELSE ff_quota_hold(p_old_phase, p_old_eligibility, p_old_wait) END;
    v_to integer := ff_quota_hold(p_new_phase, p_new_eligibility, p_new_wait);
BEGIN
    IF v_from <> v_to THEN
        RETURN ff_note_quota_change(p_policy, p_key, p_id, v_from, v_to);
    END IF;
    RETURN false;
END
$$;

DROP TRIGGER ff_quota_hold_taken ON ff_execution;
CREATE TRIGGER ff_quota_hold_taken AFTER INSERT ON ff_execution
    FOR EACH ROW
    WHEN (NEW.quota_policy_id IS NOT NULL
          AND ff_note_quota_hold_change(NEW.quota_policy_id, NEW.concurrency_key, NEW.execution_id,
                                        NULL::ff_lifecycle_phase, NULL::ff_eligibility_state, NULL::text,
                                        NEW.lifecycle_phase, NEW.eligibility_state, NEW.admission_wait))
    EXECUTE FUNCTION ff_quota_settle();

DROP TRIGGER ff_quota_hold_changed ON ff_execution;
CREATE TRIGGER ff_quota_hold_changed AFTER UPDATE ON ff_execution
    FOR EACH ROW
    WHEN (NEW.quota_policy_id IS NOT NULL
          AND ff_note_quota_hold_change(NEW.quota_policy_id, NEW.concurrency_key, NEW.execution_id,
                                        OLD.lifecycle_phase, OLD.eligibility_state, OLD.admission_wait,
                                        NEW.lifecycle_phase, NEW.eligibility_state, NEW.admission_wait))
    EXECUTE FUNCTION ff_quota_settle();

UPDATE ff_schema SET version = 14;

-- Every statement the HTTP API runs, by name (python_worker/api/db.py loads this file).
-- Each is a thin call of a SQL function, where the logic lives (supabase/schema.sql).

-- ping --
-- Is the database there?
select 1 as ok

-- pair_device --
-- The app claims the code of one pairing; returns the outcome as JSON (claim_pairing_code's,
-- with the relative's household_id when paired).
select public.pair_device(%(pairing_id)s, %(code)s, %(secret_hash)s, %(platform)s, %(app_version)s,
                          %(label)s, %(fcm_token)s, %(voip_token)s, %(apns_token)s) as result

-- pair_device_by_reference --
-- The same claim with the reference the person typed (resolved to its pairing id in SQL).
select public.pair_device_by_reference(%(pairing_reference)s, %(code)s, %(secret_hash)s,
                                       %(platform)s, %(app_version)s, %(label)s, %(fcm_token)s,
                                       %(voip_token)s, %(apns_token)s) as result

-- device_upcoming_calls --
-- The upcoming calls of the device's relative in [from, to] (the dashboard's upcoming_calls).
select schedule_id, schedule_title, occurrence_at, local_time, timezone, call_session_id,
       attempt, status
from public.device_upcoming_calls(%(device_id)s, %(from)s, %(to)s)

-- device_credentials --
-- Status and secret hash of a device (no row: no such device).
select status, secret_hash from public.device_credentials(%(device_id)s)

-- update_device_tokens --
-- The app's current push tokens; the ones sent become valid again.
select public.update_device_tokens(%(device_id)s, %(fcm_token)s, %(voip_token)s,
                                   %(apns_token)s) as result

-- device_heartbeat --
-- Last seen, app version and permissions.
select public.device_heartbeat(%(device_id)s, %(app_version)s, %(notification_permission)s,
                               %(full_screen_intent_permission)s) as result

-- prepare_call_accept --
-- May the device accept the call now? Writes nothing; returns the dynamic variables.
select public.prepare_call_accept(%(device_id)s, %(session_id)s) as result

-- record_device_event --
-- Apply a call event to the session state machine (record_call_event; `ended` with a
-- conversation id counts as `connected` then `ended` for an app that never sends `connected`).
select public.record_device_event(%(device_id)s, %(session_id)s, %(event)s, %(at)s,
                                  %(conversation_id)s) as result

-- count_webhook_rejection --
-- A webhook refused before anything was stored: count it, keep nothing.
select public.count_webhook_rejection(%(reason)s) as result

-- store_webhook_event --
-- Keep a verified webhook event as received (deduplicated).
select event_id, status, duplicate from public.store_webhook_event(%(payload)s, %(payload_bytes)s)

-- process_webhook_event --
-- Ingest a stored event in its own transaction.
select public.process_webhook_event(%(event_id)s, %(concern_fields)s) as result

-- redeem_alert_link --
-- An alert link's token (acknowledge / call her now): verified, used once, acted on.
select public.redeem_alert_link(p_token => %(token)s) as result

-- record_sms_reply --
-- A reply to one of our SMS (verified by its Twilio signature): OK acknowledges, STOP stops.
select public.record_sms_reply(
  p_from => %(from)s, p_body => %(body)s, p_message_sid => %(message_sid)s) as result

-- record_sms_status --
-- A Twilio delivery report for one of our SMS.
select public.record_sms_status(
  p_message_sid => %(message_sid)s, p_status => %(status)s, p_error_code => %(error_code)s)
  as result

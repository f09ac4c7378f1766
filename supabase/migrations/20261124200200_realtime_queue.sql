-- Supabase Realtime wake-ups (CALLPANION_WAKEUP=realtime): the worker subscribes to INSERTs on
-- notification_queue with the service key. Realtime streams only published tables, so the
-- queue is published, but only the columns a wake-up hint needs: never the push tokens or the
-- payload. RLS on the table (no policy for anon or authenticated) keeps every other
-- subscriber from seeing even these.
alter publication supabase_realtime add table public.notification_queue
  (id, status, send_at, next_attempt_at);

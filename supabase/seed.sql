-- Demo data loaded by `callpanion stack reset` (and `supabase db reset` on a hosted project's
-- local copy). Fixed ids so the demo and docs can refer to them.

insert into auth.users (id, email) values
  ('00000000-0000-4000-8000-000000000001', 'alice@example.com'),
  ('00000000-0000-4000-8000-000000000002', 'bob@example.com')
on conflict (id) do nothing;

insert into public.households (id, name, created_by) values
  ('10000000-0000-4000-8000-000000000001', 'The Smiths', '00000000-0000-4000-8000-000000000001');

insert into public.household_members (household_id, user_id, role) values
  ('10000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000001', 'admin'),
  ('10000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002', 'member');

insert into public.relatives (id, household_id, display_name, timezone) values
  ('20000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000001', 'Mum', 'Europe/London'),
  ('20000000-0000-4000-8000-000000000002', '10000000-0000-4000-8000-000000000001', 'Grandad Joe', 'America/New_York');

-- Mum has an iPhone (VoIP + regular APNs token, FCM as fallback); Joe an Android tablet.
insert into public.device_pairs (id, household_id, relative_id, status, platform, label, app_version,
                                 voip_token, apns_token, fcm_token, secret_hash, paired_at) values
  ('30000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000001',
   '20000000-0000-4000-8000-000000000001', 'active', 'ios', 'Mum''s iPhone', '1.0.0',
   repeat('a1', 32), repeat('b2', 32), 'seed-ios-fallback:' || repeat('F', 40),
   'seed-not-a-real-secret', now()),
  ('30000000-0000-4000-8000-000000000002', '10000000-0000-4000-8000-000000000001',
   '20000000-0000-4000-8000-000000000002', 'active', 'android', 'Joe''s tablet', '1.0.0',
   null, null, 'seed-android:' || repeat('A', 40), 'seed-not-a-real-secret', now());

insert into public.schedules (id, relative_id, title, kind, local_time, days_of_week) values
  ('40000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001',
   'Morning chat', 'recurring', '09:30', '{1,3,5}'),
  ('40000000-0000-4000-8000-000000000002', '20000000-0000-4000-8000-000000000002',
   'Evening check-in', 'recurring', '18:00', '{1,2,3,4,5,6,7}');

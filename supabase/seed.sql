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

-- No devices: a device's secret is made when it pairs, and is never written here. `make demo`
-- pairs a simulated phone for each relative with a real code (Mum: an iPhone, Joe: an Android
-- tablet); until then phase 1 records their calls as failed with a `no_device` alert.

insert into public.schedules (id, relative_id, title, kind, local_time, days_of_week) values
  ('40000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001',
   'Morning chat', 'recurring', '09:30', '{1,3,5}'),
  ('40000000-0000-4000-8000-000000000002', '20000000-0000-4000-8000-000000000002',
   'Evening check-in', 'recurring', '18:00', '{1,2,3,4,5,6,7}');

-- The local stack's SQL (schema.py, summary.py: catalog reads; member.py: acting as a member).
-- Named blocks (`-- name --`, a description, the statement), read by named_queries.py.

-- latest_migration --
-- The last migration recorded as applied (as the Supabase CLI records them).
select version, name from supabase_migrations.schema_migrations order by version desc limit 1

-- applied_migrations --
-- Every migration recorded as applied, oldest first.
select version, name from supabase_migrations.schema_migrations order by version

-- published_tables --
-- The supabase_realtime publication's tables: a column list and a row filter only when set.
select n.nspname as schema, c.relname as table_name,
       (select array_agg(quote_ident(a.attname) order by a.attnum) from pg_catalog.pg_attribute a
         where a.attrelid = c.oid and a.attnum = any (pr.prattrs)) as columns,
       pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) as row_filter
from pg_catalog.pg_publication p
join pg_catalog.pg_publication_rel pr on pr.prpubid = p.oid
join pg_catalog.pg_class c on c.oid = pr.prrelid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where p.pubname = 'supabase_realtime'
order by n.nspname, c.relname

-- realtime_table_names --
-- The publication's table names in one line, for `stack status`.
select string_agg(tablename, ', ' order by tablename) from pg_catalog.pg_publication_tables
where pubname = 'supabase_realtime'

-- pg_cron_installed --
-- Whether pg_cron is enabled in this database (it can be in one database only).
select exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron')

-- cron_jobs --
-- The pg_cron jobs by name, as the migrations scheduled them.
select jobname, schedule, command, active from cron.job order by jobname

-- cron_jobs_by_id --
-- The pg_cron jobs in the order they were scheduled, for `stack status`.
select jobname, schedule from cron.job order by jobid

-- preloaded_libraries --
-- What the server preloads (pg_cron must be among them for its jobs to run).
show shared_preload_libraries

-- public_tables --
-- The public tables with their Row Level Security switch and exact row counts.
select c.relname, c.relrowsecurity,
       (xpath('/row/n/text()', pg_catalog.query_to_xml(
          format('select count(*) as n from public.%I', c.relname), false, true, '')))[1]
         ::text::bigint as row_count
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind = 'r'
order by c.relname

-- database_is_empty --
-- No household yet: the demo may load its seed.
select not exists (select 1 from public.households)

-- next_calls --
-- The soonest scheduled calls, in each relative's own time and in UTC.
select r.display_name, coalesce(s.title, s.kind), s.timezone,
       to_char(s.next_run_at at time zone s.timezone, 'Dy DD Mon HH24:MI'),
       to_char(s.next_run_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI')
from public.schedules s join public.relatives r on r.id = s.relative_id
where s.active and s.next_run_at is not null
order by s.next_run_at limit %(limit)s

-- user_by_id --
-- A user of GoTrue's auth.users by id (`callpanion sql --as <id>`).
select id::text, email from auth.users where id = %(id)s

-- user_by_email --
-- A user of GoTrue's auth.users by email, in any case (`callpanion sql --as <email>`).
select id::text, email from auth.users where lower(email) = lower(%(email)s)

-- act_as_authenticated --
-- For the rest of the transaction: the role PostgREST uses for a signed-in user.
set local role authenticated

-- set_jwt_claims --
-- For the rest of the transaction: the claims auth.uid() and auth.jwt() read.
select set_config('request.jwt.claims', %(claims)s, true)

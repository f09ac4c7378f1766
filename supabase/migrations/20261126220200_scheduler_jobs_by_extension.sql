-- The scheduler's pg_cron jobs, found through the catalog instead of superuser-only settings.
--
-- The scheduler migration (20261123000600) decides whether to schedule its jobs by reading
-- shared_preload_libraries and cron.database_name. On hosted Supabase `postgres` may read them
-- (it is a member of pg_monitor, which includes pg_read_all_settings), so that migration applies
-- there; a role without that membership gets "permission denied" instead. It cannot be changed
-- now that it has been applied, so this function is the catalog-only way to do the same, for
-- later use too: a project that enabled pg_cron only after migrating runs
-- `select private.ensure_scheduler_jobs()` once, as postgres.
--
-- pg_cron can only be created in its own database (cron.database_name), so "the extension exists
-- here" (pg_extension) is exactly "pg_cron runs in this database".
create or replace function private.ensure_scheduler_jobs()
returns text[]
language plpgsql
set search_path = ''
as $$
declare
  v_name text;
  v_schedule text;
  v_command text;
  v_done text[] := '{}'::text[];
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    if exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_cron') then
      raise warning 'pg_cron is not enabled in database %: the scheduler phases were not scheduled',
        current_database()
        using hint = 'enable pg_cron (hosted Supabase: Dashboard, Database, Extensions) in the '
                     'database it runs in, then run: select private.ensure_scheduler_jobs()';
    else
      raise warning 'pg_cron is not installed on this server: the scheduler phases were not scheduled'
        using hint = 'schedule select public.queue_upcoming_calls() and select '
                     'public.release_due_calls() every minute, and select '
                     'public.cleanup_finished() daily, with another scheduler';
    end if;
    return v_done;
  end if;
  for v_name, v_schedule, v_command in
    select j.name, j.schedule, j.command from (values
      (1, 'callpanion-phase1-queue', '* * * * *', 'select public.queue_upcoming_calls()'),
      (2, 'callpanion-phase2-release', '* * * * *', 'select public.release_due_calls()'),
      (3, 'callpanion-cleanup', '17 3 * * *', 'select public.cleanup_finished()'))
      as j(k, name, schedule, command)
    order by j.k
  loop
    -- Dynamic, so the function also compiles (and lints) where the cron schema is absent.
    -- cron.schedule with a job name replaces the job of that name: re-running is a no-op.
    execute format('select cron.schedule(%L, %L, %L)', v_name, v_schedule, v_command);
    v_done := v_done || v_name;
  end loop;
  return v_done;
end
$$;
revoke all on function private.ensure_scheduler_jobs() from public, anon, authenticated, service_role;

select private.ensure_scheduler_jobs();

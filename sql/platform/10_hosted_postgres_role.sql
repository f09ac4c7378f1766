-- What hosted Supabase gives its `postgres` role, so the local stack and the tests apply the
-- migrations and the seed as a role with exactly that shape (not a superuser), and anything that
-- needs a superuser fails here first. Run by the cluster's superuser (`supabase_admin`, as on
-- hosted Supabase), after 00_roles_and_auth.sql; every statement is idempotent.
--
-- The shape, from Supabase's own role set-up (supabase/postgres, "demote postgres" and the grants
-- after it): NOSUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS; member of the
-- API roles, authenticator, pg_monitor (which includes pg_read_all_settings), pg_read_all_data and
-- pg_signal_backend, all with ADMIN OPTION; owner of its database and of the supabase_realtime
-- publication; full rights on the `auth` and `extensions` schemas; pg_cron enabled by the
-- platform, with postgres allowed to schedule jobs and read (not write) cron.job.
--
-- On a plain Postgres where `postgres` is itself the superuser running this file
-- (`callpanion migrate --with-platform`), the role is left as it is.

do $$
declare
  v_admin boolean := (select rolsuper from pg_catalog.pg_roles where rolname = current_user);
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'postgres') then
    create role postgres login;
  end if;
  if not v_admin or current_user = 'postgres' then
    return;
  end if;

  alter role postgres nosuperuser inherit createrole createdb login replication bypassrls;
  -- As on hosted Supabase: unqualified names also find the extensions schema.
  alter role postgres set search_path = "$user", public, extensions;
  grant anon, authenticated, service_role, authenticator to postgres with admin option;
  grant pg_monitor, pg_read_all_data, pg_signal_backend to postgres with admin option;

  execute format('alter database %I owner to postgres', current_database());
  grant all on schema extensions, auth to postgres;
  grant all on all tables in schema extensions, auth to postgres;
  grant all on all sequences in schema extensions, auth to postgres;
  grant all on all routines in schema extensions, auth to postgres;
  alter default privileges in schema public
    grant all on tables to postgres, anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on functions to postgres, anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on sequences to postgres, anon, authenticated, service_role;

  -- Migrations add tables to the publication, which only its owner may do.
  alter publication supabase_realtime owner to postgres;

  -- pg_cron: on hosted Supabase the project enables it (Dashboard, Database, Extensions) and the
  -- platform creates it as supabase_admin. It can only be created in its own database
  -- (cron.database_name) and only runs when preloaded.
  if exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_cron')
     and current_setting('shared_preload_libraries') like '%pg_cron%'
     and current_database() = coalesce(current_setting('cron.database_name', true), 'postgres')
  then
    -- In pg_catalog, as hosted Supabase creates it (the advisors flag extension_in_public).
    create extension if not exists pg_cron with schema pg_catalog;
    grant usage on schema cron to postgres with grant option;
    grant all on all functions in schema cron to postgres with grant option;
    grant all on all tables in schema cron to postgres with grant option;
    grant all on all sequences in schema cron to postgres with grant option;
    -- Jobs are changed through cron.schedule / cron.alter_job / cron.unschedule, never by hand.
    revoke all on table cron.job from postgres;
    grant select on table cron.job to postgres with grant option;
    revoke trigger on table cron.job_run_details from postgres;
  end if;
end
$$;

-- Households, their members (admin | member) and the relatives they call.

create table public.households (
  id uuid primary key default gen_random_uuid(),
  name text not null
    constraint households_name_check check (private.is_text('households.name', name, 200)),
  -- Keep the household when the creating account is deleted.
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.household_members (
  household_id uuid not null references public.households (id) on delete cascade,
  -- A deleted account leaves every household it was in.
  user_id uuid not null references auth.users (id) on delete cascade,
  role text not null default 'member'
    constraint household_members_role_check
    check (private.one_of('household_members.role', role, '{admin,member}')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (household_id, user_id)
);
create index household_members_user_idx on public.household_members (user_id);

create table public.relatives (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null references public.households (id) on delete cascade,
  display_name text not null
    constraint relatives_display_name_check
    check (private.is_text('relatives.display_name', display_name, 100)),
  timezone text not null
    constraint relatives_timezone_check check (private.is_timezone('relatives.timezone', timezone)),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- Target of composite foreign keys: a child row's relative must be in the child's household.
  unique (id, household_id)
);
create index relatives_household_idx on public.relatives (household_id);

create trigger households_touch before update on public.households
  for each row execute function private.touch_updated_at();
create trigger household_members_touch before update on public.household_members
  for each row execute function private.touch_updated_at();
create trigger relatives_touch before update on public.relatives
  for each row execute function private.touch_updated_at();

-- Households of the calling user (auth.uid()). SECURITY DEFINER so policies on
-- household_members can use them without recursing into their own policy.
create or replace function private.member_household_ids()
returns setof uuid
language sql stable security definer
set search_path = ''
as $$
  select m.household_id from public.household_members m where m.user_id = (select auth.uid())
$$;

create or replace function private.admin_household_ids()
returns setof uuid
language sql stable security definer
set search_path = ''
as $$
  select m.household_id from public.household_members m
  where m.user_id = (select auth.uid()) and m.role = 'admin'
$$;

revoke all on function private.member_household_ids(), private.admin_household_ids() from public;
grant execute on function private.member_household_ids(), private.admin_household_ids()
  to authenticated, service_role;

-- A household always keeps at least one admin while it exists.
create or replace function private.keep_an_admin()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if old.role = 'admin'
     and (tg_op = 'DELETE' or new.role <> 'admin' or new.household_id <> old.household_id)
     and exists (select 1 from public.households h where h.id = old.household_id)
     and not exists (
       select 1 from public.household_members m
       where m.household_id = old.household_id and m.role = 'admin' and m.user_id <> old.user_id
     ) then
    raise exception 'household % must keep at least one admin', old.household_id
      using errcode = 'check_violation',
            hint = 'Make another member an admin first, or delete the household.';
  end if;
  return coalesce(new, old);
end
$$;

create trigger household_members_keep_admin
  before update or delete on public.household_members
  for each row execute function private.keep_an_admin();

-- RLS -------------------------------------------------------------------------------------
alter table public.households enable row level security;
alter table public.household_members enable row level security;
alter table public.relatives enable row level security;

-- households: members read their own; admins rename or delete; creation only through
-- create_household() so every household starts with its creator as admin.
create policy households_select on public.households for select to authenticated
  using (id in (select private.member_household_ids()));
create policy households_update on public.households for update to authenticated
  using (id in (select private.admin_household_ids()))
  with check (id in (select private.admin_household_ids()));
create policy households_delete on public.households for delete to authenticated
  using (id in (select private.admin_household_ids()));

-- household_members: members see who else is in their households; admins add, change and
-- remove members; anyone may leave a household (delete their own membership).
create policy household_members_select on public.household_members for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy household_members_insert on public.household_members for insert to authenticated
  with check (household_id in (select private.admin_household_ids()));
create policy household_members_update on public.household_members for update to authenticated
  using (household_id in (select private.admin_household_ids()))
  with check (household_id in (select private.admin_household_ids()));
create policy household_members_delete on public.household_members for delete to authenticated
  using (household_id in (select private.admin_household_ids()) or user_id = (select auth.uid()));

-- relatives: members read; admins manage.
create policy relatives_select on public.relatives for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy relatives_insert on public.relatives for insert to authenticated
  with check (household_id in (select private.admin_household_ids()));
create policy relatives_update on public.relatives for update to authenticated
  using (household_id in (select private.admin_household_ids()))
  with check (household_id in (select private.admin_household_ids()));
create policy relatives_delete on public.relatives for delete to authenticated
  using (household_id in (select private.admin_household_ids()));

-- Table privileges narrow what the policies can ever allow.
revoke all on public.households, public.household_members, public.relatives from anon;
revoke all on public.households, public.household_members, public.relatives from authenticated;
grant select, delete on public.households to authenticated;
grant update (name) on public.households to authenticated;
grant select, insert, delete on public.household_members to authenticated;
grant update (role) on public.household_members to authenticated;
grant select, insert, delete on public.relatives to authenticated;
grant update (display_name, timezone) on public.relatives to authenticated;

-- RPC: create a household with the caller as its first admin.
create or replace function public.create_household(p_name text)
returns public.households
language plpgsql security definer
set search_path = ''
as $$
declare
  v_user uuid := (select auth.uid());
  v_household public.households;
begin
  if v_user is null then
    raise exception 'create_household requires a signed-in user' using errcode = '42501';
  end if;
  insert into public.households (name, created_by) values (p_name, v_user)
    returning * into v_household;
  insert into public.household_members (household_id, user_id, role)
    values (v_household.id, v_user, 'admin');
  return v_household;
end
$$;
revoke all on function public.create_household(text) from public, anon;
grant execute on function public.create_household(text) to authenticated, service_role;

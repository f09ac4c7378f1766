-- A call the family cancelled is over for the phone: every event it reports afterwards gets
-- CP410 (HTTP 410), so the app ends the call whatever it was about to say. Before, only
-- `accepted` got 410 and the other events got 409, which the app treats as "try something
-- else", not "stop". Other states are unchanged.
create or replace function private.call_transition(p_status text, p_event text)
returns text
language plpgsql immutable
set search_path = ''
as $$
declare
  v_next text;
begin
  v_next := case p_event
    when 'delivered' then case when p_status = 'queued' then 'ringing'
                               when p_status in ('ringing', 'accepted', 'in_progress', 'completed')
                                 then p_status end
    when 'accepted' then case when p_status in ('queued', 'ringing') then 'accepted'
                              when p_status = 'accepted' then p_status end
    when 'declined' then case when p_status in ('queued', 'ringing') then 'declined'
                              when p_status = 'declined' then p_status end
    when 'timeout' then case when p_status in ('queued', 'ringing') then 'missed'
                             when p_status = 'missed' then p_status end
    when 'connected' then case when p_status = 'accepted' then 'in_progress'
                               when p_status in ('in_progress', 'completed') then p_status end
    when 'ended' then case when p_status = 'in_progress' then 'completed'
                           when p_status = 'accepted' then 'failed'
                           when p_status in ('completed', 'failed') then p_status end
  end;
  if v_next is not null then
    return v_next;
  end if;
  if p_event not in ('delivered', 'accepted', 'declined', 'timeout', 'connected', 'ended') then
    raise exception 'invalid event: "%" is not one of delivered, accepted, declined, timeout, connected, ended',
      left(p_event, 50) using errcode = 'CP422';
  end if;
  if p_status = 'cancelled'
     or (p_event = 'accepted' and p_status in ('expired', 'missed', 'failed')) then
    raise exception 'call session is %: the call is over', p_status
      using errcode = 'CP410', hint = 'End the call on the device.';
  end if;
  raise exception 'event % is not allowed: call session is %', p_event, p_status
    using errcode = 'CP409';
end
$$;

"""A household with two relatives who have everything (issue 24's erasure and export tests),
and the catalog-wide search for what erasure must leave nowhere."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from python_worker.emulators.elevenlabs import transcription_payload
from tests.support.db import Conn, one

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"
CONCERNS = ["wellbeing_concern", "safety_concern"]


@dataclass
class Person:
    """One relative and every identifier and phrase the rows about them carry."""

    id: uuid.UUID
    name: str
    phrase: str
    sessions: list[uuid.UUID] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)
    devices: list[uuid.UUID] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    alerts: list[uuid.UUID] = field(default_factory=list)

    def needles(self, *, conversations: bool = True) -> list[str]:
        """The strings no column may hold once this relative is erased."""
        found = [self.name, self.phrase, str(self.id), *self.tokens]
        found += [str(x) for x in (*self.sessions, *self.devices, *self.alerts)]
        return found + (self.conversations if conversations else [])


@dataclass
class Household:
    id: uuid.UUID
    admin: uuid.UUID
    member: uuid.UUID
    people: list[Person]


@contextmanager
def as_user(conn: Conn, user: uuid.UUID | None) -> Iterator[Conn]:
    """As PostgREST runs a request of `user` (role authenticated), kept (a released savepoint;
    a `set local` outlives a released savepoint, so the role and claims are undone by hand)."""
    try:
        with conn.transaction():
            conn.execute("set local role authenticated")
            claims = {"role": "authenticated"} | ({"sub": str(user)} if user else {})
            conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
            yield conn
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("reset role")
            conn.execute("select set_config('request.jwt.claims', '', true)")


def add_user(conn: Conn) -> uuid.UUID:
    user: uuid.UUID = one(
        conn, "insert into auth.users (email) values (%s) returning id",
        [f"{uuid.uuid4().hex}@example.test"],
    )["id"]  # type: ignore[assignment]  # fmt: skip
    return user


def _token(n: int) -> str:
    return secrets.token_hex(n)


def add_person(conn: Conn, hh: uuid.UUID, admin: uuid.UUID, name: str, phrase: str) -> Person:
    """A relative with a device, a schedule, a finished call with a transcript (through the
    webhook), a queue snapshot, a cancel notice, an alert told by e-mail and SMS, and a reply."""
    rel: uuid.UUID = one(
        conn,
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, %s, 'Europe/London') returning id",
        [hh, name],
    )["id"]  # type: ignore[assignment]
    person = Person(rel, name, phrase)
    fcm, apns = "f" + _token(40), _token(32)
    person.tokens += [fcm, apns]
    device: uuid.UUID = one(
        conn,
        """insert into device_pairs (household_id, relative_id, status, platform, label, fcm_token,
                                     apns_token, pairing_code_hash, pairing_code_expires_at,
                                     secret_hash, paired_at)
           values (%s, %s, 'active', 'ios', %s, %s, %s, 'x', now(), 'x', now()) returning id""",
        [hh, rel, f"{name}'s iPhone", fcm, apns],
    )["id"]  # type: ignore[assignment]
    person.devices.append(device)
    schedule = one(
        conn,
        """insert into schedules (household_id, relative_id, title, kind, local_time,
                                  days_of_week, timezone)
           values (%s, %s, %s, 'recurring', '09:30', '{1,2,3,4,5}', 'Europe/London') returning id""",
        [hh, rel, f"Morning call with {name}"],
    )["id"]
    conversation = "conv_" + _token(12)
    person.conversations.append(conversation)
    session: uuid.UUID = one(
        conn,
        """insert into call_sessions (household_id, relative_id, schedule_id, device_id,
                                      occurrence_at, status, origin, conversation_id, ringing_at,
                                      answered_at)
           values (%s, %s, %s, %s, now() - interval '20 minutes', 'in_progress', 'schedule', %s,
                   now() - interval '20 minutes', now() - interval '19 minutes') returning id""",
        [hh, rel, schedule, device, conversation],
    )["id"]  # type: ignore[assignment]
    person.sessions.append(session)
    conn.execute(
        """insert into notification_queue (call_session_id, household_id, schedule_id, device_id,
             occurrence_at, status, send_at, deadline_at, platform, provider, push_token,
             fallback_provider, fallback_token, payload, sent_at)
           values (%s, %s, %s, %s, now() - interval '20 minutes', 'sent', now() - interval '21 minutes',
                   now(), 'ios', 'apns', %s, 'fcm', %s, %s, now() - interval '20 minutes')""",
        [session, hh, schedule, device, apns, fcm,
         Jsonb({"relative_name": name, "call_session_id": str(session), "relative_id": str(rel)})],
    )  # fmt: skip
    conn.execute(
        """insert into private.cancel_notices (call_session_id, household_id, device_id, platform,
             provider, push_token, status, send_at, deadline_at)
           values (%s, %s, %s, 'ios', 'apns', %s, 'sent', now(), now() + interval '1 minute')""",
        [session, hh, device, apns],
    )
    payload = transcription_payload(
        conversation,
        call_session_id=str(session),
        summary=f"{name} said: {phrase}",
        title=f"{name} and the garden",
    )
    payload["data"]["transcript"][1]["message"] = phrase
    variables = payload["data"]["conversation_initiation_client_data"]["dynamic_variables"]
    variables["relative_name"] = name
    stored = one(conn, "select * from store_webhook_event(%s, 0)", [Jsonb(payload)])
    result = one(conn, "select process_webhook_event(%s, %s) as r", [stored["event_id"], CONCERNS])[
        "r"
    ]
    assert result["status"] == "processed", result  # type: ignore[index]
    alert: uuid.UUID = one(
        conn,
        """insert into alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, details)
           values (%s, %s, %s, %s, 'missed_calls', 'critical', %s, %s) returning id""",
        [hh, rel, session, device, f"{name} did not answer 2 calls",
         Jsonb({"relative_name": name, "said": phrase})],
    )["id"]  # type: ignore[assignment]  # fmt: skip
    person.alerts.append(alert)
    # An alert that names no relative, only their device and call (how device alerts are raised).
    device_alert: uuid.UUID = one(
        conn,
        """insert into alerts (household_id, call_session_id, device_id, kind, severity, message)
           values (%s, %s, %s, 'device_unreachable', 'warning', %s) returning id""",
        [hh, session, device, f"{name}'s phone could not be reached"],
    )["id"]  # type: ignore[assignment]
    person.alerts.append(device_alert)
    return person


def add_household(conn: Conn) -> Household:
    """Two relatives with everything, an admin with e-mail and SMS, a plain member; every
    alert told (claimed and recorded as delivered), and one SMS reply."""
    hh: uuid.UUID = one(
        conn, "insert into households (name) values (%s) returning id",
        [f"The {_token(3)} family"],
    )["id"]  # type: ignore[assignment]  # fmt: skip
    admin, member = add_user(conn), add_user(conn)
    conn.execute(
        "insert into household_members (household_id, user_id, role)"
        " values (%s, %s, 'admin'), (%s, %s, 'member')",
        [hh, admin, hh, member],
    )
    phone = "+4477009" + str(uuid.uuid4().int)[:5]
    for channel, address in (("email", f"a-{_token(4)}@example.test"), ("sms", phone)):
        conn.execute(
            """insert into contact_methods (household_id, user_id, channel, address, verified_at)
               values (%s, %s, %s, %s, now())""",
            [hh, admin, channel, address],
        )
    tag = _token(3)
    people = [
        add_person(conn, hh, admin, f"Marjorie Quill{tag}", f"my hip hurts on the stairs {tag}"),
        add_person(conn, hh, admin, f"Bertram Oak{tag}", f"the tomatoes came up red {tag}"),
    ]
    claimed = conn.execute(
        "select * from claim_outbox(p_worker => 'privacy-test', p_limit => 100,"
        " p_kinds => '{alert}')"
    ).fetchall()
    assert claimed, "the alerts were told to nobody"
    results = [
        {"outbox_id": str(r["outbox_id"]), "outcome": "delivered", "status": 201,
         "message_id": "SM" + _token(16) if r["channel"] == "sms" else f"<{_token(8)}@cp>"}
        for r in claimed
    ]  # fmt: skip
    conn.execute(
        "select * from record_outbox_results(p_worker => 'privacy-test', p_results => %s)",
        [Jsonb(results)],
    )
    # One reply per alert: each acknowledges one alert told by SMS (newest unacknowledged first).
    for _ in range(sum(len(p.alerts) for p in people)):
        conn.execute("select record_sms_reply(%s, 'OK', %s)", [phone, "SM" + _token(16)])
    return Household(hh, admin, member, people)


def text_columns(conn: Conn) -> list[tuple[str, str, str, str]]:
    """(schema, table, column, type) of every text-like, JSON and uuid column of every table
    the test's role can read, from the catalog (no hand-kept list)."""
    found = conn.execute(
        """select n.nspname, c.relname, a.attname, t.typname
           from pg_catalog.pg_attribute a
           join pg_catalog.pg_class c on c.oid = a.attrelid
           join pg_catalog.pg_namespace n on n.oid = c.relnamespace
           join pg_catalog.pg_type t on t.oid = a.atttypid
           where c.relkind in ('r', 'p', 'm') and a.attnum > 0 and not a.attisdropped
             and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
             and t.typname in ('text', 'varchar', 'bpchar', 'json', 'jsonb', '_text', 'uuid',
                               '_uuid', 'name', 'citext')
             and pg_catalog.has_schema_privilege(n.oid, 'USAGE')
             and pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')
           order by 1, 2, 3"""
    ).fetchall()
    return [(r["nspname"], r["relname"], r["attname"], r["typname"]) for r in found]  # type: ignore[misc]


def occurrences(conn: Conn, needles: list[str]) -> list[tuple[str, str]]:
    """Every (table.column, needle) where a needle occurs in any row."""
    hits: list[tuple[str, str]] = []
    patterns = ["%" + n.replace("%", r"\%").replace("_", r"\_") + "%" for n in needles]
    for schema, table, column, _type in text_columns(conn):
        query = sql.SQL(
            "select u.i from unnest(%s::text[]) with ordinality u(p, i) where exists"
            " (select 1 from {}.{} x where x.{}::text ilike u.p)"
        ).format(sql.Identifier(schema), sql.Identifier(table), sql.Identifier(column))
        for row in conn.execute(query, [patterns]).fetchall():
            hits.append((f"{schema}.{table}.{column}", needles[int(row["i"]) - 1]))  # type: ignore[call-overload]
    return hits


def rows_about(conn: Conn, person: Person) -> dict[str, list[Any]]:
    """Everything stored about one relative, table by table (to prove it is untouched)."""
    queries: dict[str, tuple[str, list[Any]]] = {
        "relatives": ("select to_jsonb(r) j from relatives r where id = %s", [person.id]),
        "call_sessions": ("select to_jsonb(s) j from call_sessions s where relative_id = %s", [person.id]),
        "call_logs": ("select to_jsonb(l) j from call_logs l where relative_id = %s", [person.id]),
        "device_pairs": ("select to_jsonb(d) j from device_pairs d where relative_id = %s", [person.id]),
        "schedules": ("select to_jsonb(s) j from schedules s where relative_id = %s", [person.id]),
        "alerts": ("select to_jsonb(a) j from alerts a where relative_id = %s", [person.id]),
        "notification_queue": ("select to_jsonb(q) j from notification_queue q where call_session_id = any(%s)", [person.sessions]),
        "cancel_notices": ("select to_jsonb(c) j from private.cancel_notices c where call_session_id = any(%s)", [person.sessions]),
        "webhook_events": ("select to_jsonb(w) j from webhook_events w where conversation_id = any(%s)", [person.conversations]),
        "outbox": ("select to_jsonb(o) j from private.outbox o where alert_id = any(%s)", [person.alerts]),
    }  # fmt: skip
    found: dict[str, list[Any]] = {}
    for name, (query, params) in queries.items():
        found[name] = sorted(
            json.dumps(r["j"], sort_keys=True) for r in conn.execute(query, params).fetchall()
        )
    return found

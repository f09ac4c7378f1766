"""The local stack: the private Postgres + pg_cron cluster and the migrations."""

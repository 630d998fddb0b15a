"""A node of several media workers: a supervisor process owns the public HTTP
port, starts one worker process per core, places each room on one worker and
relays its clients' signaling there (docs/architecture.md, "Workers")."""

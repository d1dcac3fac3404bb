"""The live event stream of runs' changes (GET /v1/jobs/events): events written by the database
(run_events, migration 0014), one poller per process fanning them out to Server-Sent Events streams."""

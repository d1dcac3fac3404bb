"""Idempotency-Key on POST run, run-all and upload: a repeat gets the first answer (issue 5)."""

"""The cascade, pure (no Kafka, no HTTP): `tiers` (t1 -> escalate -> t2 -> settle, one function for the
worker and `modstream eval`), `escalate` (the rules), `verdict` (decision and records), `pipeline` (one post)."""

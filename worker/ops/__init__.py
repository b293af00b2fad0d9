"""Operations: metrics (and the sensors the stream reports to), health and readiness, the watchdogs,
logs, trace headers, thread-pool sizing."""

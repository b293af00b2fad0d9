"""The stream service: the consume loop as named steps (loop.py), its wiring (wiring.py), decode,
dispatch, the batched fast path for cleared posts, per-post tasks, outputs and commits
(at-least-once or transactions), flow control and backpressure, rebalances, the processing deadline."""

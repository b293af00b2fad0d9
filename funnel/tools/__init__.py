"""Build-time tools (run once, offline, in a throwaway venv); never imported by the worker."""

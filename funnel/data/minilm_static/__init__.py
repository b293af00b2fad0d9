"""The static embedding model (funnel/tools/distill.py): weights, tokenizer, config, provenance."""

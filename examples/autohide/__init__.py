"""A reference downstream consumer of modstream verdicts: auto-hide posts in a SQLite table."""

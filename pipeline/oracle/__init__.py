"""Oracle statistics (Eq 1) and the similarity of population responses (Eq 2, 3, 6)."""

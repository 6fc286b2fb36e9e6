"""Small programs built on busway, each tested in tests/examples/."""

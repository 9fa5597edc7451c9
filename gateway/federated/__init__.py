"""The federated aggregate API: reads only the findings index (DESIGN.md, principle 3)."""

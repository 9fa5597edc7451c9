"""The embedded store: Part 10 files on disk and their SQLite catalog. Never imports the HTTP layer."""

"""One module per ``fedgate`` sub-command."""

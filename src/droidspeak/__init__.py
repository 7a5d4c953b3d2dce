"""droidspeak."""

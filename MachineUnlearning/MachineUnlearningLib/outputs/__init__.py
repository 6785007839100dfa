"""What a run leaves for people: the report and the deletion record."""

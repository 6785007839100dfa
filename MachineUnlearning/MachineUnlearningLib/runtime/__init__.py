"""Bottom layer: JobSpec, events, errors and exit codes, option look-up, atomic files, devices."""

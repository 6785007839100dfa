"""Cohort discovery, label policies, preprocessing and the synthetic demo cohort."""

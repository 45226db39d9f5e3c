"""Chaos-testing tools for gfs: recording and checking operation histories."""

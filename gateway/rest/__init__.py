"""The plain REST API over gfs files (`builtin:rest`; docs/rest.md)."""

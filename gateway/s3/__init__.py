"""The S3 API, served by the gateway as the built-in route target `builtin:s3` (docs/s3.md)."""

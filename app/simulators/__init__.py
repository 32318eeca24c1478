"""Local stand-ins for the providers (SPEC.md "Local simulators"), registered only outside
production: `make run` without credentials and the tests talk to these over HTTP."""
